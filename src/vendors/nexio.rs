//! Placeholder until this vendor's mapping lands: every body becomes `unmapped`.

use super::{MapOptions, Mapped, MappingError, Vendor};
use crate::auth::Verified;

/// The nexio vendor module.
pub struct Nexio;

impl Vendor for Nexio {
    fn map(&self, _body: &Verified, _options: &MapOptions) -> Result<Mapped, MappingError> {
        Err(MappingError::new("nexio mapping is not implemented"))
    }
}
