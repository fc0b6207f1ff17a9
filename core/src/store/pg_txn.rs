//! A Postgres transaction that is a SeaORM connection and can also run the one statement
//! SeaORM cannot: `COPY ... FROM STDIN`. Staging an upload's records with one streamed
//! `COPY` instead of an `INSERT` per few thousand records removes a round trip and a
//! firing of the ownership trigger per statement, and lets Postgres store one chunk
//! while the api parses the next.
//!
//! Everything else in the transaction goes through [`ConnectionTrait`], so the repo
//! functions take it like any other connection.

use std::{convert::Infallible, future::ready, sync::Arc};

use futures::{Stream, StreamExt, TryStreamExt, stream};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr,
    Statement,
    sea_query::Values,
    sqlx::{self, Postgres},
};
use sea_query_sqlx::SqlxValues;
use tokio::sync::Mutex;

use crate::pg_copy::{self, BinaryRows};

/// An open transaction on one pooled connection. Dropped without [`commit`](Self::commit),
/// it rolls back (sqlx queues the `ROLLBACK` when the connection returns to the pool).
pub struct PgTxn {
    tx: Mutex<sqlx::Transaction<'static, Postgres>>,
}

/// Why a `COPY` stopped: its source failed (the `COPY` was aborted) or the database did.
#[derive(Debug)]
pub enum CopyError<E> {
    Source(E),
    Database(DbErr),
}

impl CopyError<Infallible> {
    /// A `COPY` whose source cannot fail can only have failed in the database.
    pub fn into_db(self) -> DbErr {
        match self {
            CopyError::Database(e) => e,
            CopyError::Source(never) => match never {},
        }
    }
}

impl PgTxn {
    pub async fn begin(db: &DatabaseConnection) -> Result<Self, DbErr> {
        let tx = db
            .get_postgres_connection_pool()
            .begin()
            .await
            .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))))?;
        Ok(Self { tx: Mutex::new(tx) })
    }

    pub async fn commit(self) -> Result<(), DbErr> {
        self.tx.into_inner().commit().await.map_err(exec_err)
    }

    pub async fn rollback(self) -> Result<(), DbErr> {
        self.tx.into_inner().rollback().await.map_err(exec_err)
    }

    /// Runs `statement`, a `COPY … FROM STDIN (FORMAT binary)`: sends the header, each
    /// part of `rows` as it comes, then the trailer, and returns the rows copied. A
    /// source error aborts the `COPY` (and with it the transaction) and is handed back as
    /// [`CopyError::Source`].
    pub async fn copy_in_binary<E>(
        &self,
        statement: &str,
        rows: impl Stream<Item = Result<BinaryRows, E>>,
    ) -> Result<u64, CopyError<E>> {
        let framed = stream::once(ready(Ok(pg_copy::HEADER.to_vec())))
            .chain(rows.map_ok(BinaryRows::into_bytes))
            .chain(stream::once(ready(Ok(pg_copy::TRAILER.to_vec()))));
        self.copy_in(statement, framed).await
    }

    /// [`copy_in_binary`](Self::copy_in_binary) for rows already in hand.
    pub async fn copy_in_binary_all(
        &self,
        statement: &str,
        rows: BinaryRows,
    ) -> Result<u64, DbErr> {
        self.copy_in_binary(statement, stream::iter([Ok::<_, Infallible>(rows)]))
            .await
            .map_err(CopyError::into_db)
    }

    /// Sends each buffer of `rows` as it comes.
    async fn copy_in<E>(
        &self,
        statement: &str,
        rows: impl Stream<Item = Result<Vec<u8>, E>>,
    ) -> Result<u64, CopyError<E>> {
        let db = |e| CopyError::Database(exec_err(e));
        let mut tx = self.tx.lock().await;
        let mut copy = tx.copy_in_raw(statement).await.map_err(db)?;
        let mut rows = std::pin::pin!(rows);
        while let Some(item) = rows.next().await {
            match item {
                Ok(buf) => {
                    copy.send(buf).await.map_err(db)?;
                }
                Err(e) => {
                    // The transaction is dead either way; the source's error is the news.
                    let _ = copy.abort("the source of the rows failed").await;
                    return Err(CopyError::Source(e));
                }
            }
        }
        copy.finish().await.map_err(db)
    }
}

fn exec_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)))
}

fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))
}

/// The statement as sqlx runs it for SeaORM itself (its `sqlx_query` is private); it
/// takes the statement over, so a batch's bound arrays are not copied again.
fn query(stmt: Statement) -> sqlx::query::Query<'static, Postgres, SqlxValues> {
    let values = stmt.values.unwrap_or(Values(Vec::new()));
    sqlx::query_with(sqlx::AssertSqlSafe(stmt.sql), SqlxValues(values))
}

#[async_trait::async_trait]
impl ConnectionTrait for PgTxn {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        let mut tx = self.tx.lock().await;
        query(stmt)
            .execute(&mut **tx)
            .await
            .map(Into::into)
            .map_err(exec_err)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let mut tx = self.tx.lock().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut **tx)
            .await
            .map(Into::into)
            .map_err(exec_err)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let mut tx = self.tx.lock().await;
        query(stmt)
            .fetch_optional(&mut **tx)
            .await
            .map(|row| row.map(Into::into))
            .map_err(query_err)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut tx = self.tx.lock().await;
        query(stmt)
            .fetch_all(&mut **tx)
            .await
            .map(|rows| rows.into_iter().map(Into::into).collect())
            .map_err(query_err)
    }
}
