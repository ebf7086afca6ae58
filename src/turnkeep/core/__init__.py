"""The pure core: deciding what to send, what it costs and what to keep. No I/O, no clock, no environment."""
