"""Readers: one module per benchmark family, each a registered `Benchmark` (see
`shiftray.registry`) that turns files into domain splits (`shiftray.data.arrays.DomainArrays`).
"""
