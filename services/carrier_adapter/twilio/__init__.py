"""Carrier kind "twilio": an HTTP provider speaking Twilio's Messages API (config, client, callbacks)."""
