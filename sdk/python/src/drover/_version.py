"""The package's version: the Rust crate's (``Cargo.toml``'s ``version``),
which the test command checks."""

__version__ = "0.3.0"
