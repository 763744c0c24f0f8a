//! ferry executors (parallel revm worker pools): built under the executors issue.
