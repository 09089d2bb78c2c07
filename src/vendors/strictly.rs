//! Placeholder until this vendor's mapping lands: every body becomes `unmapped`.

use super::{MapOptions, Mapped, MappingError, Vendor};
use crate::auth::Verified;

/// The strictly vendor module.
pub struct Strictly;

impl Vendor for Strictly {
    fn map(&self, _body: &Verified, _options: &MapOptions) -> Result<Mapped, MappingError> {
        Err(MappingError::new("strictly mapping is not implemented"))
    }
}
