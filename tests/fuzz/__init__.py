"""Seeded, bounded fuzz tests: random inputs must end in a result or the one error the contract names."""
