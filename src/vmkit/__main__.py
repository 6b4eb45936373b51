"""`python -m vmkit`: the same entry point as the `vmkit` console script."""

from vmkit.entry import main

main()
