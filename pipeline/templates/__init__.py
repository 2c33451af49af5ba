"""Jinja2 templates of the pipeline's HTML outputs (a package so that ``*.html`` ships as package data)."""
