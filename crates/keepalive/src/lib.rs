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

pub mod error;
pub mod explain;
pub mod netns;
pub mod policy;
pub mod reference;
pub mod socket;
pub mod sysctl;

pub use error::{Class, Error};
pub use policy::{Policy, PolicyError, Settings};
