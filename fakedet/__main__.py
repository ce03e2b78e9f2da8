"""`python -m fakedet`: the same entry point as the `fakedet` console script."""

from fakedet.cli import main

if __name__ == "__main__":
    main()
