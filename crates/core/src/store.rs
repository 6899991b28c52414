//! Celery's `CertStore`: certificates by id, duplicates refused.

use crate::cert::Certificate;
use crate::error::{display_bytes, Error, ErrorCode, Result};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default, Clone, Debug)]
pub struct CertStore {
    by_id: HashMap<String, Arc<Certificate>>,
    /// Insertion order, for iteration.
    order: Vec<Arc<Certificate>>,
}

impl CertStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a certificate; one whose id is already present is refused.
    pub fn add(&mut self, cert: Arc<Certificate>) -> Result<()> {
        if self.by_id.contains_key(cert.id()) {
            return Err(Error::new(
                ErrorCode::DuplicateCertificate,
                format!("Duplicate certificate: '{}'", cert.id()),
            ));
        }
        self.by_id.insert(cert.id().to_owned(), Arc::clone(&cert));
        self.order.push(cert);
        Ok(())
    }

    /// The certificate with this id (UTF-8 bytes, as found in a payload).
    pub fn lookup(&self, id: &[u8]) -> Option<&Arc<Certificate>> {
        std::str::from_utf8(id).ok().and_then(|s| self.by_id.get(s))
    }

    /// Like [`lookup`](Self::lookup), refusing an unknown id as Celery does.
    pub fn get(&self, id: &[u8]) -> Result<&Arc<Certificate>> {
        self.lookup(id).ok_or_else(|| {
            Error::new(
                ErrorCode::UnknownCertificate,
                format!("Unknown certificate: '{}'", display_bytes(id)),
            )
        })
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Certificate>> {
        self.order.iter()
    }
}
