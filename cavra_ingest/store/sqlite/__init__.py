"""The embedded SQLite store.

`store` is the facade; `writes` runs on the writer thread; `readers` lends the read pools; `listings`
holds the read statements; `counts`, `countplan` and `countreads` fold and read the counts.
"""
