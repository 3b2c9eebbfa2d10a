"""Sans-I/O parsers: bytes in, results out."""
