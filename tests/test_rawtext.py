from server.crm import rawtext


def test_uids_of_one_object():
    assert rawtext.object_uids("BEGIN:VCARD\r\nUID:c\r\nEND:VCARD\r\n") == {"c"}
    ics = ("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a\r\nEND:VEVENT\r\n"
           "BEGIN:VEVENT\r\nUID:a\r\nRECURRENCE-ID:20250101T000000Z\r\nEND:VEVENT\r\n"
           "END:VCALENDAR\r\n")
    assert rawtext.object_uids(ics) == {"a"}
    assert rawtext.object_uids(ics.replace("UID:a\r\nREC", "UID:b\r\nREC")) == {"a", "b"}
    assert rawtext.object_uids(ics.replace("UID:a\r\nEND", "END", 1)) == {"", "a"}
    assert rawtext.object_uids(ics + ics) is None


def test_folded_uid_and_quoted_colon_in_params():
    ics = ('BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:very-long-\r\n uid\r\n'
           'ATTENDEE;CN="Doe: John":mailto:j@x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n')
    assert rawtext.object_uids(ics) == {"very-long-uid"}
    line = next(ln for ln in rawtext.logical_lines(ics) if ln.name == "ATTENDEE")
    assert line.value == "mailto:j@x" and rawtext.param_values(line.params, "CN") == ["Doe: John"]


def test_split_keeps_lines_and_only_referenced_timezones():
    ics = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nX-WR-CALNAME:All\r\n"
           "BEGIN:VTIMEZONE\r\nTZID:A\r\nEND:VTIMEZONE\r\n"
           "BEGIN:VTIMEZONE\r\nTZID:B\r\nEND:VTIMEZONE\r\n"
           "BEGIN:VEVENT\r\nUID:1\r\nDTSTART;TZID=A:20250101T100000\r\nX-P:a,b\r\nEND:VEVENT\r\n"
           "BEGIN:VTODO\r\nUID:2\r\nEND:VTODO\r\nEND:VCALENDAR\r\n")
    parts = rawtext.split_objects(ics)
    assert parts["1"] == ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTIMEZONE\r\nTZID:A\r\n"
                          "END:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:1\r\nDTSTART;TZID=A:"
                          "20250101T100000\r\nX-P:a,b\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    assert "TZID" not in parts["2"] and "BEGIN:VTODO" in parts["2"]


def test_split_vcards():
    vcf = "BEGIN:VCARD\r\nUID:x\r\nFN:X\r\nEND:VCARD\r\nBEGIN:VCARD\r\nFN:no uid\r\nEND:VCARD\r\n"
    assert rawtext.split_objects(vcf) == {"x": "BEGIN:VCARD\r\nUID:x\r\nFN:X\r\nEND:VCARD\r\n"}
