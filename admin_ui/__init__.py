"""The web pages of davbox: jinja2 templates (autoescaping), English and Dutch.

``web.WebApp`` serves the start page, the login (password, then one-time
code), two-factor set-up, recovery codes, app passwords and password change;
``i18n`` picks the language and compiles the translations.
"""
