//! Local inference: a checkpoint that left the network as a bundle runs on the user's own
//! machine with nothing but the bundle and the CPU. No module here opens a socket except the
//! local API's listener (`serve`), and nothing reads a file the caller did not name.
//!
//! - [`bundle`]: the one-file model bundle (weights, spec, tokenizer, provenance proof) and its
//!   offline verification.
//! - [`engine`]: generation with a KV cache, f32 or int8 weights, multi-threaded.
//! - [`provenance`]: a checkpoint's lineage back to its job's start, from a node or a bundle.
//! - [`gguf`]: the model in a llama-family GGUF layout that llama.cpp loads.
//! - [`serve`] (feature `serve`, on by default): the OpenAI-compatible HTTP API on loopback.
//! - [`text`]: text from byte tokens as they stream.

pub mod bundle;
pub mod engine;
pub mod gguf;
pub mod provenance;
#[cfg(feature = "serve")]
pub mod serve;
pub mod text;
