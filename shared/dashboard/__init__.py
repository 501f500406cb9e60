"""The admin's web page (``dashboard``, SPEC 3, issue 18): ``data`` gathers what it shows with
bounded reads, ``render`` writes the self-contained HTML, ``csrf`` guards its forms and
``actions`` does what they ask (replay or delete a poison message, scan for drift)."""
