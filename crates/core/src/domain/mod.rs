//! Domain newtypes: each value is parsed once, at the edge, and is valid from then on.

pub mod client_id;
pub mod pkce;
pub mod redirect_uri;
pub mod resource;
pub mod scope;
pub mod secret;

pub use client_id::ClientId;
pub use pkce::{CodeChallenge, CodeVerifier};
pub use redirect_uri::RedirectUri;
pub use resource::ResourceUri;
pub use scope::{Scope, ScopeSet};
pub use secret::{SecretHash, SecretToken};
