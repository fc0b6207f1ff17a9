//! Ids that cannot be mixed up: a function that takes a [`TenantId`] and a [`JobId`] does
//! not compile when handed them the other way round, as two `Uuid`s would. Each is a
//! UUID in the database, in JSON (`serde(transparent)`) and in paths. Response bodies
//! keep plain `Uuid` fields, so the OpenAPI document describes them as UUIDs.

use std::{fmt, str::FromStr};

use sea_orm::{DbErr, DeriveValueType, TryFromU64};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            DeriveValueType,
        )]
        #[serde(transparent)]
        #[sea_orm(try_getable_array)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new id: UUID v7, so ids sort in creation order.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self(Uuid::nil())
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::from_str(s).map(Self)
            }
        }

        // A primary key type must say it cannot come from an auto-increment value.
        impl TryFromU64 for $name {
            fn try_from_u64(_: u64) -> Result<Self, DbErr> {
                Err(DbErr::ConvertFromU64(stringify!($name)))
            }
        }
    };
}

id!(
    /// A tenant's id.
    TenantId
);
id!(
    /// A job's id.
    JobId
);
id!(
    /// A batch's id.
    BatchId
);
