"""CONFIG: the gateway's typed, self-documenting TOML configuration.

`sections` declares every section and key with its documentation and validation, and loads a file
into a frozen `Config`; errors name the file, the key and the fix.
"""
