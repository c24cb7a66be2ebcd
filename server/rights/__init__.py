"""Rights: who may read or write which collection (Radicale plugin + a pure policy)."""
