//! The threat model as tests. Each module performs one class of attack against the real
//! processes (the `pazar` devnet, the provider daemon, the Docker engine and the sandbox
//! runtime) and shows it refused with a clear reason while everybody else's workloads and
//! balances stay untouched. ARCHITECTURE.md ("Trust boundaries") names the same classes.

mod counts;
mod egress;
mod exhaustion;
mod exhaustion_ingress;
mod exhaustion_provider;
mod expiry;
mod images;
mod keys;
mod lease_identity;
mod manifest;
mod mempool;
mod paging;
mod races;
mod requests;
mod requirements;
mod sandbox_env;
mod signatures;
