//! Routing: which provider gets a request.
//!
//! [`table`] is one core's replica of the topics and their providers, with
//! the choice of a provider; [`cidr`] is the policy on which addresses may be
//! providers at all.

pub mod cidr;
pub mod table;
