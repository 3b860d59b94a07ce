"""``python -m hubforge.models``: the ``models`` hub service (`hubforge.models.service`)."""

from hubforge.models.service import main

if __name__ == "__main__":
    main()
