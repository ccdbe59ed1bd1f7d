//! TCP keepalive on Linux, as a library: the policy grammar and the kernel's detection math,
//! applying policies to sockets, and the kernel's defaults per network namespace.
//!
//! The command-line tool `keepalive` is a thin layer over this crate: every decision lives here,
//! every printed word lives there.
//!
//! ```
//! use keepalive::policy::{Policy, Settings, timeline::ProbeTimeline};
//!
//! let policy: Policy = "idle=60s,interval=10s,count=5".parse().unwrap();
//! let settings = policy.resolve(&Settings::LINUX_DEFAULT).unwrap();
//! let timeline = ProbeTimeline::silent_peer(&settings);
//! assert_eq!(timeline.time_to_detect().as_secs(), 110);
//! ```

//! Without the default `std` feature only [`policy`] is built, with no allocation anywhere:
//! that is what the LD_PRELOAD shim links.

#![cfg_attr(not(feature = "std"), no_std)]

pub mod policy;
pub mod printable;

#[cfg(feature = "std")]
pub mod advice;

#[cfg(feature = "std")]
pub mod bpf;
#[cfg(feature = "std")]
pub mod cgroup;
#[cfg(feature = "std")]
pub mod diag;
#[cfg(feature = "std")]
pub mod error;
#[cfg(feature = "std")]
pub mod explain;
#[cfg(feature = "std")]
pub mod launch;
#[cfg(feature = "std")]
pub mod netns;
#[cfg(feature = "std")]
pub mod output;
#[cfg(feature = "std")]
pub mod process;
#[cfg(feature = "std")]
pub mod reference;
#[cfg(feature = "std")]
pub mod retrofit;
#[cfg(feature = "std")]
pub mod signals;
#[cfg(feature = "std")]
pub mod socket;
#[cfg(feature = "std")]
pub mod status;
#[cfg(feature = "std")]
pub mod supervise;
#[cfg(feature = "std")]
pub mod sysctl;

#[cfg(feature = "std")]
pub use error::{Class, Error};
pub use policy::{Policy, PolicyError, Settings};
