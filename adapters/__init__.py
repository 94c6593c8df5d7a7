"""Provider adapters (behind one Protocol) and the provider emulator."""
