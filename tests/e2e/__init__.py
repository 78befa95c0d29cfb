"""End-to-end tests: real service processes driven with the real grpcurl binary."""
