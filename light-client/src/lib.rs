//! ferry light client (headers, fork choice, proofs): built under the light-client issue.
