"""`subscribers import --from mailchimp|substack|buttondown|listmonk|auto`, on exports written
here in each service's format (Mailchimp's zip with its subscribed/unsubscribed/cleaned files,
a localised Mailchimp header, Substack's, Buttondown's and listmonk's CSVs)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.audience.formats import detect, normal_time
from newsletter.store import open_store

MC_COLUMNS = ('"Email Address","First Name","Last Name","Address","Phone Number",MEMBER_RATING,OPTIN_TIME,'
              "OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,"
              "LAST_CHANGED,LEID,EUID,NOTES,TAGS")
MC_SUBSCRIBED = MC_COLUMNS + "\r\n" + "\r\n".join([
    'ada@example.com,Ada,Lovelace,"12 St James\'s Square  London  SW1Y 4JH  GB",+44 20 7946 0000,4,'
    '"2023-03-01 09:15:02",203.0.113.7,"2023-03-01 09:16:40",203.0.113.7,51.5,-0.1,0,1,Europe/London,GB,ENG,'
    '"2024-01-02 10:00:00",123456789,a1b2c3d4e5,,"""Early readers"",""AI"""',
    'wei@example.cn,伟,张,,,2,"2023-05-10 02:00:00",198.51.100.20,,,,,,,,CN,,"2024-01-02 10:00:00",'
    "223456789,b2c3d4e5f6,,",
    'Twice@Example.com,Old,Spelling,,,2,"2023-06-01 00:00:00",,,,,,,,,,,"2024-01-02",323456789,c3,,',
]) + "\r\n"
MC_UNSUBSCRIBED = (MC_COLUMNS.replace("LAST_CHANGED", "UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,"
                                                      "UNSUB_REASON,UNSUB_REASON_OTHER,LAST_CHANGED") + "\r\n"
                   'grace@example.com,Grace,Hopper,,,2,"2022-01-01 08:00:00",192.0.2.1,,,,,,,,US,,'
                   '"2024-02-01 12:00:00","Weekly #12",abc123,"I no longer want to receive these emails",,'
                   '"2024-02-01 12:00:00",423456789,d4,,\r\n'
                   'twice@example.com,Twice,Again,,,2,"2023-06-01 00:00:00",,,,,,,,,,,'
                   '"2024-03-01 12:00:00","Weekly #13",abc124,"Other",,"2024-03-01",523456789,e5,,\r\n')
MC_CLEANED = (MC_COLUMNS.replace("LAST_CHANGED", "CLEAN_TIME,CLEAN_CAMPAIGN_TITLE,CLEAN_CAMPAIGN_ID,LAST_CHANGED")
              + "\r\n" + 'gone@example.com,Gone,Away,,,1,"2021-01-01 00:00:00",,,,,,,,,,,"2024-01-05 00:00:00",'
              '"Weekly #9",abc120,"2024-01-05 00:00:00",623456789,f6,,\r\n')
MC_NONSUBSCRIBED = MC_COLUMNS + "\r\n" + "buyer@example.com,Buyer,One,,,2,,,,,,,,,,,,\"2024-01-01\",7,g7,,\r\n"

MC_GERMAN = ("E-Mail-Adresse,Vorname,Nachname,Stadt,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,"
             "LEID,EUID,TAGS\n"
             "jonas@example.de,Jonas,Müller,Berlin,3,2023-07-01 12:00:00,203.0.113.99,2023-07-01 12:05:00,"
             "203.0.113.99,9,h8,\n")

SUBSTACK = ("email,name,active_subscription,expiry,plan,email_disabled,created_at,first_payment_at\n"
            "paid@example.com,Pat Paid,true,2025-12-01T00:00:00.000Z,monthly,false,2023-02-03T04:05:06.000Z,"
            "2023-02-03T04:06:00.000Z\n"
            "free@example.com,,false,,,false,2024-05-06T07:08:09.000Z,\n"
            "off@example.com,Off,false,,,true,2022-01-01T00:00:00.000Z,\n")

BUTTONDOWN = ("email,id,creation_date,notes,metadata,secondary_id,subscriber_type,source,tags,referrer_url,"
              "utm_campaign,utm_medium,utm_source,ip_address\n"
              'reg@example.com,5f2c,2023-01-02T03:04:05.678901+00:00,met at a conference,"{""City"": ""Oslo"", '
              '""plan"": {""tier"": 2}}",1,regular,api,"ai,weekly",https://ref.example/,launch,social,tw,'
              "198.51.100.1\n"
              "new@example.com,6a3d,2024-01-01T00:00:00+00:00,,{},2,unactivated,embed,,,,,,198.51.100.2\n"
              "left@example.com,7b4e,2022-01-01T00:00:00+00:00,,{},3,unsubscribed,import,,,,,,\n"
              "bad@example.com,8c5f,2022-01-01T00:00:00+00:00,,{},4,undeliverable,import,,,,,,\n")

LISTMONK = ("uuid,email,name,attributes,status,created_at,updated_at\n"
            'a8f3c2e1-0000-4000-8000-000000000001,lm1@example.com,Lena M,"{""city"": ""Bergen"", ""Plan"": '
            '""pro"", ""projects"": [1, 2]}",enabled,2023-03-04 05:06:07.123456+00,2024-01-01 00:00:00+00\n'
            'a8f3c2e1-0000-4000-8000-000000000002,lm2@example.com,Blocked One,{},blocklisted,'
            "2023-03-04 05:06:07+00,2024-01-01 00:00:00+00\n")


@pytest.fixture
def news(project, cli):
    assert cli("lists", "create", "news").exit_code == 0
    return project


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text.encode("utf-8"))
    return path


def _store():
    return open_store(load_config())


def test_mailchimp_export_zip(news, cli):
    archive = _zip(news / "members_export_3f2a1b.zip", {
        "subscribed_members_export_3f2a1b.csv": MC_SUBSCRIBED,
        "unsubscribed_members_export_3f2a1b.csv": MC_UNSUBSCRIBED,
        "cleaned_members_export_3f2a1b.csv": MC_CLEANED,
        "nonsubscribed_members_export_3f2a1b.csv": MC_NONSUBSCRIBED,
    })
    result = cli("subscribers", "import", str(archive), "--list", "news", "--from", "auto", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["added"], data["duplicates"], data["consent_records"]) == (5, 1, 5)
    err = result.stderr
    assert "mailchimp export" in err
    assert "Email Address → email; First Name + Last Name → name" in err
    assert "OPTIN_TIME, OPTIN_IP, CONFIRM_TIME, CONFIRM_IP → consent record" in err
    assert "Phone Number → phone_number" in err and "TAGS → tags" in err
    assert "nonsubscribed_members_export_3f2a1b.csv: skipped" in err
    with _store() as s:
        ada = s.get_subscriber("ada@example.com")
        assert ada.name == "Ada Lovelace" and ada.status.value == "active"
        assert ada.attributes["tags"] == '"Early readers","AI"' and ada.attributes["timezone"] == "Europe/London"
        assert "email_address" not in ada.attributes and "optin_time" not in ada.attributes
        assert s.get_subscriber("wei@example.cn").name == "张伟"  # family name first, no space
        assert s.get_subscriber("grace@example.com").status.value == "unsubscribed"
        assert s.get_subscriber("gone@example.com").status.value == "bounced"
        assert s.is_suppressed("gone@example.com")
        assert s.get_subscriber("buyer@example.com") is None
        twice = s.get_subscriber("twice@example.com")  # in subscribed and unsubscribed: the opt-out wins
        assert twice.status.value == "unsubscribed" and twice.email == "twice@example.com" and twice.name == "Twice Again"
        assert sorted(r.email for r in s.recipients("news")) == ["ada@example.com", "wei@example.cn"]
        consent = s.export_subscriber(ada.id)["consent"]
        assert consent == [{"source": "mailchimp export (members_export_3f2a1b.zip)",
                            "optin_at": "2023-03-01T09:15:02Z", "optin_ip": "203.0.113.7",
                            "confirmed_at": "2023-03-01T09:16:40Z", "confirm_ip": "203.0.113.7",
                            "evidence": {"optin_at": "2023-03-01 09:15:02", "optin_ip": "203.0.113.7",
                                         "confirmed_at": "2023-03-01 09:16:40", "confirm_ip": "203.0.113.7"},
                            "recorded_at": consent[0]["recorded_at"]}]
    shown = cli("subscribers", "show", "ada@example.com").stdout
    assert "opted in 2023-03-01T09:15:02Z from 203.0.113.7 confirmed 2023-03-01T09:16:40Z" in shown
    # the same import again changes nothing and keeps one consent record each
    again = json.loads(cli("subscribers", "import", str(archive), "--list", "news", "--json").stdout)
    assert again["added"] == 0 and again["unchanged"] >= 2
    with _store() as s:
        assert s.conn.execute("SELECT count(*) FROM consent_records").fetchone()[0] == 5
    # erasing a reader erases their consent record with them
    assert cli("subscribers", "erase", "ada@example.com").exit_code == 0
    with _store() as s:
        assert s.conn.execute("SELECT count(*) FROM consent_records").fetchone()[0] == 4


def test_mailchimp_localised_header_and_a_single_file(news, cli):
    (news / "de.csv").write_text(MC_GERMAN, encoding="utf-8")
    result = cli("subscribers", "import", "de.csv", "--list", "news")
    assert result.exit_code == 0, result.output
    assert "E-Mail-Adresse → email; Vorname + Nachname → name" in result.stderr
    with _store() as s:
        jonas = s.get_subscriber("jonas@example.de")
        assert jonas.name == "Jonas Müller" and jonas.attributes == {"stadt": "Berlin", "member_rating": "3",
                                                                    "leid": "9", "euid": "h8"}
        assert s.export_subscriber(jonas.id)["consent"][0]["confirm_ip"] == "203.0.113.99"
    (news / "unsub.csv").write_text(MC_UNSUBSCRIBED, encoding="utf-8")  # UNSUB_TIME column → unsubscribed
    assert cli("subscribers", "import", "unsub.csv", "--list", "news", "--from", "mailchimp").exit_code == 0
    with _store() as s:
        assert s.get_subscriber("grace@example.com").status.value == "unsubscribed"


def test_mailchimp_with_a_full_name_field(news, cli):
    (news / "mc.csv").write_text("Email Address,Name,City\nx@example.com,Xavier Roe,Lyon\n", encoding="utf-8")
    assert cli("subscribers", "import", "mc.csv", "--list", "news").exit_code == 0
    with _store() as s:
        x = s.get_subscriber("x@example.com")
        assert (x.name, x.attributes) == ("Xavier Roe", {"city": "Lyon"})


def test_substack(news, cli):
    (news / "email_list.mypub.csv").write_text(SUBSTACK, encoding="utf-8")
    result = cli("subscribers", "import", "email_list.mypub.csv", "--list", "news", "--from", "substack")
    assert result.exit_code == 0, result.output
    assert "created_at → consent record" in result.stderr and "email_disabled → status" in result.stderr
    with _store() as s:
        paid = s.get_subscriber("paid@example.com")
        assert paid.name == "Pat Paid" and paid.attributes["active_subscription"] == "true"
        assert s.get_subscriber("off@example.com").status.value == "unsubscribed"
        assert s.export_subscriber(paid.id)["consent"][0]["optin_at"] == "2023-02-03T04:05:06Z"


def test_buttondown(news, cli):
    (news / "buttondown.csv").write_text(BUTTONDOWN, encoding="utf-8")
    result = cli("subscribers", "import", "buttondown.csv", "--list", "news")  # auto
    assert result.exit_code == 0, result.output
    assert "buttondown export" in result.stderr
    with _store() as s:
        reg = s.get_subscriber("reg@example.com")
        assert reg.status.value == "active"
        assert reg.attributes["city"] == "Oslo" and reg.attributes["plan"] == '{"tier": 2}'
        assert reg.attributes["tags"] == "ai,weekly" and reg.attributes["notes"] == "met at a conference"
        consent = s.export_subscriber(reg.id)["consent"][0]
        assert (consent["optin_at"], consent["optin_ip"]) == ("2023-01-02T03:04:05Z", "198.51.100.1")
        assert [m.status.value for m in s.memberships(s.get_subscriber("new@example.com").id)] == ["unconfirmed"]
        assert s.get_subscriber("left@example.com").status.value == "unsubscribed"
        assert s.get_subscriber("bad@example.com").status.value == "bounced"


def test_listmonk(news, cli):
    (news / "subscribers.csv").write_text(LISTMONK, encoding="utf-8")
    result = cli("subscribers", "import", "subscribers.csv", "--list", "news", "--from", "listmonk")
    assert result.exit_code == 0, result.output
    with _store() as s:
        lena = s.get_subscriber("lm1@example.com")
        assert lena.name == "Lena M"
        assert lena.attributes == {"city": "Bergen", "plan": "pro", "projects": "[1, 2]",
                                   "uuid": "a8f3c2e1-0000-4000-8000-000000000001",
                                   "updated_at": "2024-01-01 00:00:00+00"}
        assert s.get_subscriber("lm2@example.com").status.value == "unsubscribed"
        assert s.export_subscriber(lena.id)["consent"][0]["optin_at"] == "2023-03-04T05:06:07Z"


def test_wrong_service_and_unknown_format_are_one_line_errors(news, cli):
    (news / "s.csv").write_text(SUBSTACK.replace("email,", "mail,", 1), encoding="utf-8")
    wrong = cli("subscribers", "import", "s.csv", "--list", "news", "--from", "mailchimp")
    assert wrong.exit_code == 2 and "not a mailchimp export: no 'Email Address'" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    bad = cli("subscribers", "import", "s.csv", "--list", "news", "--from", "tinyletter")
    assert bad.exit_code == 2 and "--from must be one of" in bad.stderr
    (news / "x.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    empty = cli("subscribers", "import", "x.zip", "--list", "news")
    assert empty.exit_code == 2 and "no .csv file" in empty.stderr
    with _store() as s:
        assert s.count_subscribers() == 0


def test_rejected_rows_name_the_zip_member(news, cli):
    archive = _zip(news / "e.zip", {"subscribed_members_export_1.csv": MC_COLUMNS + "\nnot-an-address,A,B\n"})
    result = cli("subscribers", "import", str(archive), "--list", "news")
    assert result.exit_code == 1
    assert f"{archive}:subscribed_members_export_1.csv:2: rejected" in result.stderr


def test_detect_and_times():
    assert detect(MC_COLUMNS.replace('"', "").split(",")) == "mailchimp"
    assert detect(["Adresse e-mail", "Prénom", "Nom", "OPTIN_TIME"]) == "mailchimp"
    assert detect(SUBSTACK.split("\n")[0].split(",")) == "substack"
    assert detect(BUTTONDOWN.split("\n")[0].split(",")) == "buttondown"
    assert detect(LISTMONK.split("\n")[0].split(",")) == "listmonk"
    assert detect(["Email", "Name", "City"]) == "csv"
    assert detect(["Email Address", "Name"]) == "mailchimp"
    assert normal_time("2023-03-04 05:06:07.123456+00") == "2023-03-04T05:06:07Z"
    assert normal_time("2023-03-04T13:06:07+08:00") == "2023-03-04T05:06:07Z"
    assert normal_time("last tuesday") == "last tuesday"


def test_a_bad_file_in_the_zip_stops_everything(news, cli):
    path = news / "broken.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("subscribed_members_export_1.csv", MC_SUBSCRIBED.encode("utf-8"))
        z.writestr("unsubscribed_members_export_1.csv",
                   (MC_COLUMNS + "\r\nzoë@example.com,Zoë,Ä,,,2\r\n").encode("latin-1"))
    result = cli("subscribers", "import", str(path), "--list", "news")
    assert result.exit_code == 2 and "unsubscribed_members_export_1.csv: is not UTF-8" in result.stderr
    with _store() as s:
        assert s.count_subscribers() == 0
    z2 = _zip(news / "ok.zip", {"subscribed_members_export_1.csv": MC_SUBSCRIBED})
    assert cli("subscribers", "import", str(z2), "--list", "news").exit_code == 0
    with _store() as s:
        assert s.get_subscriber("ada@example.com").source == "import:mailchimp"
