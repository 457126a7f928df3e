"""The local agent that phones and web pages use to request and make signatures."""
