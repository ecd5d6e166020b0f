"""One module per Neutron resource: its attributes, rules and view.

Each module exposes a ``Resource`` (see ``base.py``); ``service.py`` drives
them inside database transactions and emits the notifications.
"""
