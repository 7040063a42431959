"""Monitoring: events folded into statistics (`statistics`), the figures and text of a summary
(`summary`, `summary_text`), the live view (`live_view`), the monitor loop over files and event
queues (`monitor`), the HTML report (`report`), and the sink that keeps a run's statistics as it
writes its events (`stats_sink`).
"""
