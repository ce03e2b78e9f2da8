"""The built-in demo data: real photo crops shipped in packages, and fakes made from them offline
by several families of generators (up-samplers, partial fakes, denoisers, sub-pixel decoders)."""
