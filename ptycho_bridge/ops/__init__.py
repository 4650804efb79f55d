"""Operations on neutral archives: convert, migrate, diff, parity, run, reassembly, reports, the engine registry."""
