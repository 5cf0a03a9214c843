"""The dashboard's rows, one module each, in the order they appear.

Each row module holds one function per panel and ``panels()``, the row's
panels in display order; ``TITLE`` is the row's heading. Adding a panel means
writing its function and listing it in ``panels()``; the assembly numbers
the panels and lays the rows out.
"""
