"""Security: mTLS, the authorization table, bearer tokens, and the loopback rule (issue 9)."""
