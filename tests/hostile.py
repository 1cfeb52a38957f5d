"""Builders of hostile message parts shared by the hostile-input tests."""

import base64


def encoded_words(text: str) -> str:
    """`text` as folded RFC 2047 encoded-words of at most 75 characters each (36 bytes of UTF-8
    per word, never splitting a character), as a hostile sender writes a long header."""
    words, chunk = [], ""
    for char in text:
        if len((chunk + char).encode()) > 36:
            words.append(chunk)
            chunk = ""
        chunk += char
    words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(word.encode()).decode()}?=" for word in words)
