//! The tenant-access contract: what the operator writes and the server reads.
