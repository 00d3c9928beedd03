"""`python -m videogen ...` trains (see videogen.train)."""

from videogen.train import main

if __name__ == "__main__":
    main()
