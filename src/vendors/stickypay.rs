//! Placeholder until this vendor's mapping lands: every body becomes `unmapped`.

use super::{MapOptions, Mapped, MappingError, Vendor};
use crate::auth::Verified;

/// The stickypay vendor module.
pub struct Stickypay;

impl Vendor for Stickypay {
    fn map(&self, _body: &Verified, _options: &MapOptions) -> Result<Mapped, MappingError> {
        Err(MappingError::new("stickypay mapping is not implemented"))
    }
}
