//! `freight secrets rotate`: re-sealing every stored destination with the current key.

use entity::{JobId, TenantId};
use sea_orm::DatabaseConnection;

use crate::{
    domain::destination::Destination,
    error::{Error, Result},
    secrets::Keyring,
    store::jobs,
};

/// What [`rotate`] did.
#[derive(Debug, Default)]
pub struct Resealed {
    /// Jobs read.
    pub scanned: u64,
    /// Jobs whose stored destination was rewritten.
    pub changed: u64,
    /// Jobs left as they were because a secret would not open: `(job id, why)`. The
    /// reason names a key id or a field, never a value.
    pub failed: Vec<(JobId, String)>,
}

/// Re-seals every job's destination secrets with `keyring`'s current key, `batch_size`
/// jobs at a time: values sealed with an old key, and plaintext stored before a key was
/// configured. Values already sealed with the current key are left alone, so a second
/// run changes nothing.
pub async fn rotate(
    db: &DatabaseConnection,
    keyring: &Keyring,
    batch_size: u64,
) -> Result<Resealed> {
    if !keyring.is_enabled() {
        return Err(Error::Conflict(
            "FREIGHT_SECRET_KEY is not set: there is no key to seal with".into(),
        ));
    }
    let mut report = Resealed::default();
    let mut after = JobId::default();
    loop {
        let rows = jobs::destinations_after(db, after, batch_size).await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let (mut ids, mut olds, mut news) = (Vec::new(), Vec::new(), Vec::new());
        for row in rows {
            report.scanned += 1;
            match reseal(keyring, row.tenant_id, &row.raw) {
                Ok(Some(new)) => {
                    ids.push(row.id);
                    olds.push(row.raw);
                    news.push(new);
                }
                Ok(None) => {}
                Err(why) => report.failed.push((row.id, why)),
            }
        }
        if !ids.is_empty() {
            report.changed += jobs::replace_destinations(db, ids, olds, news).await?;
        }
    }
    Ok(report)
}

/// The stored destination re-sealed, as JSON text, or `None` if nothing changes.
fn reseal(
    keyring: &Keyring,
    tenant_id: TenantId,
    raw: &str,
) -> std::result::Result<Option<String>, String> {
    let old: Destination = serde_json::from_str(raw)
        .map_err(|e| format!("the stored destination cannot be read: {e}"))?;
    let new = old
        .resealed(keyring, tenant_id)
        .map_err(|e| e.to_string())?;
    Ok((new != old).then(|| serde_json::to_string(&new).expect("a destination serialises")))
}
