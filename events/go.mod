module profiles/events

go 1.26
