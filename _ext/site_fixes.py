"""Small fixes to the generated site, as a local Sphinx extension.

jupyter-book 1.0.4 registers sphinx-thebe's inline configuration script twice, so every page
declared ``const THEBE_JS_URL`` twice and the browser logged a SyntaxError. Drop exact duplicate
scripts from each page.
"""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = (getattr(script, "filename", None) or "", repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # in place: later handlers (MathJax) add to this same list


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
