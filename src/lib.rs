pub mod http1;

/// The request header that names the topic a request is for.
pub const TOPIC_HEADER: &str = "croupier-topic";
