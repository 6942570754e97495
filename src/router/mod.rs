//! Routing: which provider gets a request.
//!
//! [`table`] is one core's replica of the topics and their providers, with
//! the choice of a provider; [`budget`] bounds retries; [`cidr`] is the
//! policy on which addresses may be providers at all.

pub mod budget;
pub mod cidr;
pub mod table;
