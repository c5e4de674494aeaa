"""Provision Twilio Flex web chats from a spreadsheet."""

__version__ = "0.1.0"
