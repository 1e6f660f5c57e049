//! Target `auth`: the authentication header parser.
//!
//! TODO: written once `src/auth.rs` from main is merged into this branch.
