"""What CRM ingestion costs per calendar PUT on a CRM of realistic size (not a test).

A fresh database is seeded in bulk (SQLAlchemy Core inserts, not the domain functions) with
customers (English, Slovak/Czech, German and Chinese names with their legal forms, one e-mail
domain each, blocking keys, owned by ten reps) and contacts (~70 % attached to a customer at
its domain, with their vCards published in the owner's "Customer contacts" book as the CRM
keeps them; the rest on free-mail, unattached). Then ~1 KB events as calendar clients write
them (organizer = the rep, 2-4 external attendees, LOCATION, VTIMEZONE or UTC, ~5 % weekly
series) are PUT through the in-process WSGI app, each one twice with a different UID: into
``/bench/off/`` with the CRM hook removed (audit only) and into ``/bench/on/`` with the default
hooks (audit + ingestion). The two are interleaved (OFF,ON then ON,OFF, ...) so both see the
same database size and caches. Attendees: 60 % existing contacts, 20 % new people at the
event's customer's domain, 20 % new free-mail people.

    .venv/bin/python bench/ingest_cost.py [--quick] [--contacts N] [--customers N]
        [--puts N] [--warmup N] [--seed N] [--no-cards] [--profile N [--profile-out FILE]]
        [--db-url URL] [--out FILE]

Defaults: 100,000 contacts, 20,000 customers, 1,000 measured PUTs per mode, a fresh SQLite
file in a temp dir. ``--quick``: 10,000 / 2,000 / 300. A ``postgresql://`` URL names a server:
a fresh database ``crm_bench_<hex>`` is created there and dropped afterwards. ``--profile N``
runs N more ingesting PUTs under cProfile and prints the hot spots. Figures are written to
``bench/results/ingest_cost-<sqlite|postgresql>[-quick].json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import json
import multiprocessing
import os
import platform
import pstats
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import unicodedata
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterator, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import sqlalchemy  # noqa: E402
from sqlalchemy import create_engine, event, func, insert, select, text, update  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from davclient import Dav, make_configuration  # noqa: E402
from server.app import CrmApplication  # noqa: E402
from server.crm import cards, db, normalize, schema, users  # noqa: E402
from server.crm.models import (Contact, ContactCard, ContactEmail, ContactKey,  # noqa: E402
                               Customer, CustomerDomain, CustomerKey, DavChange, DavCollection,
                               DavItem, DuplicateCandidate, User, Visit, VisitPlacement)
from server.crm.settings import CrmSettings  # noqa: E402
from server.crm_hooks import Hooks  # noqa: E402
from server.crm_hooks.audit import AuditHooks  # noqa: E402

CHUNK = 5000
REP, PASSWORD = "bench", "benchpass1"
INTERNAL = "ourco.example"
REP_EMAIL = f"{REP}@{INTERNAL}"
OTHER_REPS = [f"rep{i:02d}" for i in range(1, 10)]   # own most customers (see seed())
COLLEAGUES = [("Petra Králová", f"petra.kralova@{INTERNAL}"),
              ("Thomas Berger", f"thomas.berger@{INTERNAL}"),
              ("李娜", f"li.na@{INTERNAL}")]

# --- names ---------------------------------------------------------------------------------
# Four "languages" of customers and people; each customer's contacts mostly share its language.

EN_BRAND_A = ("North Blue Silver Green Apex Summit Pioneer Atlas Crest Harbor Granite Maple "
              "Cedar Ever Sterling Horizon Vertex Beacon Liberty Pinnacle Red River Oak Eagle "
              "Falcon Phoenix Orion Nova Quantum Fusion Prime Key Lake West East South High "
              "Coast Meridian Trinity").split()
EN_BRAND_B = "wind stone field bridge point gate ridge brook wood line star tech core wave".split()
EN_INDUSTRY = ("Logistics Systems Foods Energy Analytics Software Manufacturing Pharma Robotics "
               "Engineering Consulting Materials Networks Health Capital Retail Textiles "
               "Plastics Components Instruments Solutions Labs Motors Biotech Packaging "
               "Electronics Chemicals Media Aerospace Marine").split()
EN_EXTRA = ["", "", "", "Group", "International", "Industries", "Partners", "Technologies",
            "Services", "Europe", "Trading", "Works", "Holdings"]
EN_FORMS = ["Ltd", "Ltd.", "Inc.", "LLC", "plc", "Corp.", "Limited", "Co., Ltd.", "Inc"]

SK_BRANDS = ("Tatra Považie Morava Orava Liptov Kysuce Zemplín Šariš Spiš Gemer Turiec Záhorie "
             "Podunajsko Brno Ostrava Plzeň Olomouc Zlín Žilina Trnava Nitra Prešov Košice "
             "Poprad Martin Trenčín Zvolen Levice Senica Horák Novák Kováč Svoboda Dvořák "
             "Černý Procházka Kučera Veselý Krejčí Hudec Baláž Tóth Varga Molnár Lukáč Polák "
             "Kollár Mikuš Beneš").split()
SK_INDUSTRY = ("Stavebniny Strojárne Elektro Agro Drevo Kovo Plasty Logistika Stavby Potraviny "
               "Textil Chemika Energetika Doprava Servis Technika Obchod Sklo Papier "
               "Autodiely").split()
SK_EXTRA = ["", "", "", "Group", "Slovakia", "CZ", "SK", "Trade", "Plus", "Invest", "Service",
            "Holding"]
SK_FORMS = ["s.r.o.", "s.r.o.", "s. r. o.", "spol. s r.o.", "a.s.", "a. s.", "k.s.", "v.o.s."]

DE_SURNAMES = ("Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann "
               "Schäfer Koch Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun "
               "Krüger Hofmann Hartmann Lange").split()
DE_INDUSTRY = ("Maschinenbau Logistik Elektrotechnik Anlagenbau Werkzeugbau Metallbau "
               "Kunststofftechnik Automation Medizintechnik Verpackung Antriebstechnik Holzbau "
               "Feinmechanik Umwelttechnik Systemtechnik").split()
DE_EXTRA = ["", "", "Süd", "Nord", "Bayern", "Sachsen", "Austria", "Schweiz", "International"]
DE_FORMS = ["GmbH", "GmbH", "GmbH & Co. KG", "AG", "KG", "mbH"]

CN_CITIES = [("北京", "beijing"), ("上海", "shanghai"), ("深圳", "shenzhen"), ("广州", "guangzhou"),
             ("杭州", "hangzhou"), ("苏州", "suzhou"), ("南京", "nanjing"), ("成都", "chengdu"),
             ("武汉", "wuhan"), ("天津", "tianjin"), ("重庆", "chongqing"), ("西安", "xian"),
             ("宁波", "ningbo"), ("青岛", "qingdao"), ("厦门", "xiamen"), ("无锡", "wuxi"),
             ("东莞", "dongguan"), ("佛山", "foshan"), ("合肥", "hefei"), ("长沙", "changsha")]
CN_BRANDS = ["华星", "中兴", "海川", "金石", "宏达", "瑞丰", "天成", "鑫源", "恒通", "东方", "博远",
             "嘉禾", "锦程", "万通", "新世纪", "光明", "长城", "飞跃", "汇丰", "永盛"]
CN_INDUSTRY = ["电子科技", "机械制造", "物流", "化工", "医疗器械", "软件", "新能源", "精密仪器",
               "贸易", "材料科技", "汽车零部件", "环保科技"]
CN_FORMS = ["有限公司", "有限公司", "股份有限公司", "有限责任公司"]

# People: (first names, surnames); Slovak/Czech surnames as (male, female).
EN_FIRST = ("James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David "
            "Barbara Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Emily "
            "Matthew Laura Andrew Emma Mark Olivia Paul Sophie Steven Rachel Kevin Hannah Brian "
            "Megan George Chloe Edward Grace Ryan Amy Jason Lucy Gary Helen Eric Kate").split()
EN_LAST = ("Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Thomas "
           "Moore Jackson Martin Lee Thompson White Harris Clark Lewis Robinson Walker Young "
           "Allen King Wright Scott Green Baker Hill Adams Nelson Carter Mitchell Roberts Turner "
           "Phillips Campbell Parker Evans Edwards Collins Stewart Morris Murphy Cook Rogers "
           "Morgan Cooper Peterson Bailey Reed Kelly Howard Ward Cox Richardson Wood Watson "
           "Brooks").split()
SK_MALE = ("Ján Peter Martin Tomáš Michal Jozef Marek Lukáš Pavol Jakub Milan Juraj Róbert "
           "Ondřej Jiří Petr Vojtěch Radek Filip Štefan Roman Miroslav Ladislav Igor Dušan "
           "Matej Adam Daniel Patrik Richard").split()
SK_FEMALE = ("Jana Mária Eva Zuzana Katarína Lucia Petra Monika Veronika Tereza Lenka Alžbeta "
             "Barbora Kristína Simona Hana Markéta Ivana Dana Michaela Martina Andrea Silvia "
             "Gabriela Anna Lýdia Soňa Marta Renáta Jarmila").split()
SK_LAST = [("Novák", "Nováková"), ("Horváth", "Horváthová"), ("Kováč", "Kováčová"),
           ("Varga", "Vargová"), ("Tóth", "Tóthová"), ("Nagy", "Nagyová"), ("Baláž", "Balážová"),
           ("Szabó", "Szabóová"), ("Molnár", "Molnárová"), ("Lukáč", "Lukáčová"),
           ("Svoboda", "Svobodová"), ("Dvořák", "Dvořáková"), ("Černý", "Černá"),
           ("Procházka", "Procházková"), ("Kučera", "Kučerová"), ("Veselý", "Veselá"),
           ("Horák", "Horáková"), ("Němec", "Němcová"), ("Marek", "Marková"),
           ("Pokorný", "Pokorná"), ("Hudec", "Hudecová"), ("Kollár", "Kollárová"),
           ("Polák", "Poláková"), ("Štefánik", "Štefániková"), ("Mikuš", "Mikušová"),
           ("Bartoš", "Bartošová"), ("Šimko", "Šimková"), ("Krajčír", "Krajčírová"),
           ("Oravec", "Oravcová"), ("Hric", "Hricová"), ("Sloboda", "Slobodová"),
           ("Kríž", "Krížová"), ("Blaho", "Blahová"), ("Urban", "Urbanová"),
           ("Fiala", "Fialová"), ("Zeman", "Zemanová"), ("Růžička", "Růžičková"),
           ("Beneš", "Benešová"), ("Sedláček", "Sedláčková"), ("Doležal", "Doležalová")]
DE_FIRST = ("Lukas Anna Jonas Lea Leon Hannah Felix Laura Maximilian Julia Paul Sophie Tobias "
            "Katharina Stefan Sabine Andreas Claudia Jürgen Birgit Matthias Petra Florian "
            "Nicole Sebastian Stefanie Markus Susanne Christian Monika").split()
DE_LAST = DE_SURNAMES + ("Krause Meier Lehmann Schmid Schulze Maier Köhler Herrmann König "
                         "Walter Mayer Huber Kaiser Fuchs Peters Lang Scholz Möller Weiß Jung "
                         "Hahn Schubert Vogel Friedrich Keller Günther Frank Berger Winkler "
                         "Roth").split()
CN_FAMILY = [("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"),
             ("杨", "yang"), ("黄", "huang"), ("赵", "zhao"), ("吴", "wu"), ("周", "zhou"),
             ("徐", "xu"), ("孙", "sun"), ("马", "ma"), ("朱", "zhu"), ("胡", "hu"), ("郭", "guo"),
             ("何", "he"), ("高", "gao"), ("林", "lin"), ("罗", "luo")]
CN_GIVEN = [("伟", "wei"), ("芳", "fang"), ("娜", "na"), ("敏", "min"), ("静", "jing"),
            ("丽", "li"), ("强", "qiang"), ("磊", "lei"), ("军", "jun"), ("洋", "yang"),
            ("勇", "yong"), ("艳", "yan"), ("杰", "jie"), ("涛", "tao"), ("明", "ming"),
            ("超", "chao"), ("秀英", "xiuying"), ("小明", "xiaoming"), ("建华", "jianhua"),
            ("志强", "zhiqiang"), ("海燕", "haiyan"), ("国庆", "guoqing"), ("丽娟", "lijuan"),
            ("文博", "wenbo"), ("子涵", "zihan"), ("雨欣", "yuxin"), ("浩然", "haoran"),
            ("思远", "siyuan"), ("晓东", "xiaodong"), ("春梅", "chunmei")]

# A few dozen real names alone would make every name repeat a dozen times among 100,000
# contacts (and every new contact a dozen "possible duplicates"); compound surnames and
# two-character given names bring repeats down to roughly what a real address book has.
EN_LAST += [a + b for a in ("Ash Black White Green Stan Whit Brad Chester Lang Hunt Wood "
                            "Hart Brook Fair Cole Craw Ald Bran Dun Els Fern Gar Har Kings "
                            "Lock Marsh Mid New Red Sher Stock Thorn Wal West Win Hol Rad "
                            "Brom Crom").split()
            for b in "ford well field ley ton wood worth by more ham dale ridge croft bury".split()]
DE_LAST += [a + b for a in ("Hof Stein Wald Berg Bach Rosen Linden Eich Brunn Kirch Sonnen "
                            "Feld Haus Holz Kling Lich Mittel Ober Unter Alt Neu Gross Klein "
                            "Schön Wein Buch Hirsch Falk Fried").split()
            for b in "mann berger bauer hofer meier huber müller felder er inger".split()]
_SK_ROOTS = ("Hud Kral Pol Mik Bart Sim Hric Orav Slob Kriz Blah Urb Zem Ben Dol Sed Kov Nov "
             "Hor Jur Pal Šuk Ďur Čap Mach Krn Lip Vlč Rus Tom Bal Gaj Kub Lac Fab Jan Mat "
             "Pet Štef Ruž").split()
SK_LAST += [(r + m, r + f) for r in _SK_ROOTS for m, f in
            (("ák", "áková"), ("ík", "íková"), ("áč", "áčová"), ("an", "anová"),
             ("oš", "ošová"), ("ko", "ková"), ("ovič", "ovičová"), ("ula", "ulová"))]
_CN_CHARS = [("建", "jian"), ("国", "guo"), ("华", "hua"), ("文", "wen"), ("明", "ming"),
             ("晓", "xiao"), ("春", "chun"), ("海", "hai"), ("志", "zhi"), ("雪", "xue"),
             ("玉", "yu"), ("秀", "xiu"), ("德", "de"), ("子", "zi"), ("思", "si"),
             ("俊", "jun"), ("欣", "xin"), ("佳", "jia"), ("宇", "yu"), ("嘉", "jia"),
             ("梅", "mei"), ("兰", "lan"), ("平", "ping"), ("新", "xin"), ("永", "yong"),
             ("立", "li"), ("成", "cheng"), ("金", "jin"), ("云", "yun"), ("鹏", "peng"),
             ("浩", "hao"), ("然", "ran"), ("婷", "ting"), ("雨", "yu"), ("晨", "chen"),
             ("博", "bo"), ("涵", "han"), ("怡", "yi"), ("天", "tian"), ("安", "an")]
CN_GIVEN += [(a + b, pa + pb) for a, pa in _CN_CHARS for b, pb in _CN_CHARS if a != b]

LANGUAGES = ("en", "sk", "de", "cn")
CUSTOMER_MIX = (0.35, 0.35, 0.20, 0.10)
FREE_MAIL = {"en": ["gmail.com", "outlook.com", "yahoo.com", "icloud.com", "hotmail.com"],
             "sk": ["gmail.com", "azet.sk", "centrum.sk", "seznam.cz", "email.cz"],
             "de": ["gmx.de", "web.de", "t-online.de", "gmail.com"],
             "cn": ["qq.com", "163.com", "126.com", "foxmail.com"]}
CITIES = {"en": ["London, 12 King Street", "Manchester, 4 Deansgate", "Dublin, 7 Harcourt Rd"],
          "sk": ["Bratislava, Mlynské nivy 5", "Košice, Hlavná 12", "Brno, Vídeňská 89",
                 "Praha 4, Na Pankráci 1724/129", "Žilina, Národná 8"],
          "de": ["München, Leopoldstraße 21", "Stuttgart, Königstraße 3", "Wien, Mariahilfer "
                 "Straße 40", "Dresden, Prager Straße 8"],
          "cn": ["深圳市南山区科技园", "上海市浦东新区世纪大道100号", "苏州工业园区星湖街328号"]}
# What the server treats as free-mail (the default setting): such domains name no customer.
FREE_MAIL_DOMAINS = CrmSettings().free_mail_domains
assert all(d in FREE_MAIL_DOMAINS for ds in FREE_MAIL.values() for d in ds)
TIMEZONES = {"en": "Europe/London", "sk": "Europe/Bratislava", "de": "Europe/Berlin",
             "cn": "Asia/Shanghai"}


def _ascii(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if c.isascii() and not unicodedata.combining(c))


def slug(value: str, sep: str = "-") -> str:
    return re.sub(r"[^a-z0-9]+", sep, _ascii(value).lower()).strip(sep)


def company(rng: random.Random, lang: str) -> tuple[str, str]:
    """A customer name of that language and a slug for its e-mail domain."""
    if lang == "en":
        brand = rng.choice(EN_BRAND_A) + rng.choice(EN_BRAND_B)
        words = [brand, rng.choice(EN_INDUSTRY), rng.choice(EN_EXTRA), rng.choice(EN_FORMS)]
        return " ".join(w for w in words if w), slug(brand)
    if lang == "sk":
        brand, industry = rng.choice(SK_BRANDS), rng.choice(SK_INDUSTRY)
        head = f"{industry} {brand}" if rng.random() < 0.5 else \
            (f"{brand}-{industry}" if rng.random() < 0.5 else f"{brand} {industry}")
        words = [head, rng.choice(SK_EXTRA), rng.choice(SK_FORMS)]
        return " ".join(w for w in words if w), slug(f"{brand}-{industry}")
    if lang == "de":
        owner = rng.choice(DE_SURNAMES)
        if rng.random() < 0.3:
            owner = f"{owner} & {rng.choice(DE_SURNAMES)}"
        words = [owner, rng.choice(DE_INDUSTRY), rng.choice(DE_EXTRA), rng.choice(DE_FORMS)]
        return " ".join(w for w in words if w), slug(owner.split(" & ")[0])
    city, pinyin = rng.choice(CN_CITIES)
    return (city + rng.choice(CN_BRANDS) + rng.choice(CN_INDUSTRY) + rng.choice(CN_FORMS),
            pinyin)


def person(rng: random.Random, lang: str) -> tuple[str, str]:
    """A person's display name and the e-mail local part they would have at work."""
    if lang == "en":
        first, last = rng.choice(EN_FIRST), rng.choice(EN_LAST)
    elif lang == "sk":
        female = rng.random() < 0.5
        first = rng.choice(SK_FEMALE if female else SK_MALE)
        last = rng.choice(SK_LAST)[1 if female else 0]
    elif lang == "de":
        first, last = rng.choice(DE_FIRST), rng.choice(DE_LAST)
    else:
        (family, fam_py), (given, giv_py) = rng.choice(CN_FAMILY), rng.choice(CN_GIVEN)
        return family + given, rng.choice([f"{fam_py}.{giv_py}", f"{giv_py}.{fam_py}",
                                           f"{fam_py}{giv_py}"])
    first_, last_ = slug(first, ""), slug(last, "")
    local = rng.choices([f"{first_}.{last_}", f"{first_[0]}{last_}"], weights=(2, 1))[0]
    return f"{first} {last}", local


class Addresses:
    """Unique e-mail addresses: a clash gets a number, as mail admins do."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def make(self, local: str, domain: str, rng: Optional[random.Random] = None) -> str:
        if rng is not None:   # free-mail users pick numbers themselves
            local = f"{local}{rng.choice(['', rng.randint(1, 99), rng.randint(1960, 2004)])}"
        address, n = f"{local}@{domain}", 1
        while address in self.taken:
            n += 1
            address = f"{local}{n}@{domain}"
        self.taken.add(address)
        return address


# --- the database ----------------------------------------------------------------------------

@contextlib.contextmanager
def fresh_database(db_url: Optional[str]) -> Iterator[str]:
    """A new, empty database's URL; removed afterwards (SQLite file or PostgreSQL database)."""
    if not db_url:
        folder = tempfile.mkdtemp(prefix="ingest_cost-")
        try:
            yield db.resolve_url(f"sqlite:///{folder}/bench.db")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    url = db.resolve_url(db_url)
    if db.is_sqlite(url):
        path = make_url(url).database
        if path and os.path.exists(path):
            raise SystemExit(f"{path} exists: give a new file (the benchmark fills it)")
        yield url
        return
    # PostgreSQL: the URL names a server (and a database to connect to for CREATE DATABASE).
    name = "crm_bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        for engine in list(db._engines.values()):
            engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Seeded:
    """What the event generator needs to know about the seeded data."""
    customers: list[tuple[int, str, str, str]]           # id, name, domain, language
    contacts_of: dict[int, list[tuple[str, str]]]        # customer id -> [(name, e-mail)]
    free_contacts: dict[str, list[tuple[str, str]]]      # language -> [(name, e-mail)]
    addresses: Addresses
    timings: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    card_books: list[int] = field(default_factory=list)  # collection ids, seeded at revision 1


def _bulk(conn, model, rows: list[dict]) -> int:
    for i in range(0, len(rows), CHUNK):
        conn.execute(insert(model), rows[i:i + CHUNK])
    return len(rows)


def seed(engine, rng: random.Random, n_customers: int, n_contacts: int,
         with_cards: bool = True) -> Seeded:
    """Customers, their domains and keys; contacts, their addresses and keys; the attached
    contacts' published cards (see seed_cards). In bulk."""
    started = time.perf_counter()
    addresses = Addresses()
    now = dt.datetime.now(dt.timezone.utc)
    customers, customer_rows, domain_rows, key_rows = [], [], [], []
    owner_of: dict[int, str] = {}
    seen: set[str] = set()
    while len(customers) < n_customers:
        lang = rng.choices(LANGUAGES, CUSTOMER_MIX)[0]
        name, domain_slug = company(rng, lang)
        normalized = normalize.company_name(name)
        if normalized in seen:           # customers.add() refuses a second one too
            continue
        seen.add(normalized)
        cid = len(customers) + 1
        domain = f"{domain_slug}{cid}.example"
        customers.append((cid, name, domain, lang))
        # Most customers belong to other reps; 10 % to the benchmark's rep.
        owner = REP if rng.random() < 0.1 else rng.choice(OTHER_REPS)
        owner_of[cid] = owner
        customer_rows.append(dict(id=cid, name=name, normalized_name=normalized, source="import",
                                  owner=owner, level=rng.choice("ABC"), created_at=now,
                                  updated_at=now))
        domain_rows.append(dict(customer_id=cid, domain=domain))
        key_rows += [dict(key=k, customer_id=cid) for k in sorted(normalize.keys(normalized))]
    generated = time.perf_counter()
    contacts_of: dict[int, list[tuple[str, str]]] = defaultdict(list)
    free_contacts: dict[str, list[tuple[str, str]]] = defaultdict(list)
    contact_rows, email_rows, contact_keys = [], [], []
    card_jobs: list[tuple[int, str, str, str, str]] = []   # id, name, company, e-mail, owner
    for contact_id in range(1, n_contacts + 1):
        if rng.random() < 0.7:
            cid, _, domain, lang = rng.choice(customers)
            if rng.random() < 0.15:      # colleagues abroad: a name of another language
                lang = rng.choice(LANGUAGES)
            name, local = person(rng, lang)
            address = addresses.make(local, domain)
            contacts_of[cid].append((name, address))
            card_jobs.append((contact_id, name, customers[cid - 1][1], address, owner_of[cid]))
        else:
            cid, lang = None, rng.choices(LANGUAGES, CUSTOMER_MIX)[0]
            name, local = person(rng, lang)
            address = addresses.make(local, rng.choice(FREE_MAIL[lang]), rng)
            free_contacts[lang].append((name, address))
        normalized = normalize.person_name(name)
        contact_rows.append(dict(id=contact_id, name=name, normalized_name=normalized,
                                 customer_id=cid, source="import", created_at=now,
                                 updated_at=now))
        email_rows.append(dict(contact_id=contact_id, email=address))
        contact_keys += [dict(key=k, contact_id=contact_id)
                         for k in sorted(normalize.keys(normalized))]
    generated_contacts = time.perf_counter()
    rows = {}
    with engine.begin() as conn:
        # Other reps exist (the owners of most customers); they cannot log in.
        rows["users"] = _bulk(conn, User, [dict(username=r, role="rep", email=f"{r}@{INTERNAL}",
                                                created_at=now) for r in OTHER_REPS])
        rows["crm_customers"] = _bulk(conn, Customer, customer_rows)
        rows["crm_customer_domains"] = _bulk(conn, CustomerDomain, domain_rows)
        rows["crm_customer_keys"] = _bulk(conn, CustomerKey, key_rows)
        rows["crm_contacts"] = _bulk(conn, Contact, contact_rows)
        rows["crm_contact_emails"] = _bulk(conn, ContactEmail, email_rows)
        rows["crm_contact_keys"] = _bulk(conn, ContactKey, contact_keys)
        if engine.dialect.name == "postgresql":
            # Explicit ids leave the SERIAL sequences behind: move them past the seeded rows.
            for table in ("crm_customers", "crm_contacts"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT max(id) FROM {table}))"))
    inserted = time.perf_counter()
    card_books: list[int] = []
    if with_cards:
        card_books = seed_cards(engine, card_jobs, rows)
    carded = time.perf_counter()
    if engine.dialect.name == "postgresql":
        # What autovacuum would do soon anyway (the bulk insert is far past its insert
        # threshold), done now so the run has stable plans: ANALYZE for the statistics, and
        # VACUUM for the visibility map, without which no index-only scan skips the heap. A
        # server running without autovacuum (this machine's CI PostgreSQL) is not what this
        # measures: the duplicate-name look-up took 3-5 ms there instead of ~1.5.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    analyzed = time.perf_counter()
    return Seeded(customers, contacts_of, free_contacts, addresses, timings=dict(
        generate_customers_s=generated - started, generate_contacts_s=generated_contacts -
        generated, insert_s=inserted - generated_contacts, cards_s=carded - inserted,
        analyze_s=analyzed - carded, total_s=analyzed - started), rows=rows,
        card_books=card_books)


def _card_text(job: tuple[int, str, str, str]) -> str:
    contact_id, name, company_, address = job
    return cards.vcard(contact_id, name, None, company_, [address], [])


def seed_cards(engine, jobs: list[tuple[int, str, str, str, str]], rows: dict[str, int]
               ) -> list[int]:
    """The attached contacts' cards in their customer owner's "Customer contacts" book.

    Every way a contact gets attached (customer add, contact add/accept) publishes its card,
    so a CRM in use has them all; without them, each seeded contact's first visit would
    publish its card and bill that one-off write to the PUTs measured. The text is the
    server's own (``cards.vcard``, in a process pool: vobject is slow), so ingestion finds
    them current and rewrites none. Returns the books' ids; counts rows into ``rows``."""
    with multiprocessing.Pool() as pool:
        texts = pool.map(_card_text, [job[:4] for job in jobs], chunksize=2000)
    with Session(engine) as session, session.begin():
        books = {owner: cards.ensure_books(session, owner)[cards.CONTACTS_BOOK].id
                 for owner in sorted({job[4] for job in jobs})}
        session.execute(update(DavCollection).where(DavCollection.id.in_(books.values()))
                        .values(revision=1))
    now = dt.datetime.now(dt.timezone.utc)
    items, changes, placed = [], [], []
    for (contact_id, _, _, _, owner), card in zip(jobs, texts):
        book, href = books[owner], cards.href_of(contact_id)
        items.append(dict(collection_id=book, href=href, uid=f"crm-contact-{contact_id}",
                          name="VCARD", component="", text=card, etag=cards.etag_of(card),
                          range_start=cards.TIMESTAMP_MIN, range_end=cards.TIMESTAMP_MAX,
                          revision=1, modified_at=now))
        changes.append(dict(collection_id=book, href=href, revision=1, deleted=False,
                            changed_at=now))
        placed.append(dict(contact_id=contact_id, collection_id=book))
    with engine.begin() as conn:
        rows["dav_items (cards)"] = _bulk(conn, DavItem, items)
        rows["dav_changes (cards)"] = _bulk(conn, DavChange, changes)
        rows["crm_contact_cards"] = _bulk(conn, ContactCard, placed)
    return sorted(books.values())


# --- events ------------------------------------------------------------------------------------

VTIMEZONE = {
    "Europe/Bratislava": ("+0100", "+0200", "CET", "CEST"),
    "Europe/Berlin": ("+0100", "+0200", "CET", "CEST"),
    "Europe/London": ("+0000", "+0100", "GMT", "BST"),
}


def vtimezone(tzid: str) -> list[str]:
    if tzid == "Asia/Shanghai":
        return ["BEGIN:VTIMEZONE", f"TZID:{tzid}", "BEGIN:STANDARD", "TZOFFSETFROM:+0800",
                "TZOFFSETTO:+0800", "TZNAME:CST", "DTSTART:19700101T000000", "END:STANDARD",
                "END:VTIMEZONE"]
    std, dst, std_name, dst_name = VTIMEZONE[tzid]
    return ["BEGIN:VTIMEZONE", f"TZID:{tzid}", "BEGIN:DAYLIGHT", f"TZOFFSETFROM:{std}",
            f"TZOFFSETTO:{dst}", f"TZNAME:{dst_name}", "DTSTART:19700329T020000",
            "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3", "END:DAYLIGHT", "BEGIN:STANDARD",
            f"TZOFFSETFROM:{dst}", f"TZOFFSETTO:{std}", f"TZNAME:{std_name}",
            "DTSTART:19701025T030000", "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10",
            "END:STANDARD", "END:VTIMEZONE"]


def escape(value: str) -> str:
    """An iCalendar TEXT value."""
    return (value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\n", "\\n"))


def fold(line: str) -> str:
    """RFC 5545 line folding at 75 octets, never inside a UTF-8 character."""
    out, current, size = [], "", 0
    for char in line:
        width = len(char.encode("utf-8"))
        if size + width > 75:
            out.append(current)
            current, size = " ", 1
        current += char
        size += width
    out.append(current)
    return "\r\n".join(out)


@dataclass
class EventPlan:
    """One event's shape; rendered twice (OFF and ON) with different UIDs."""
    customer_id: int
    lang: str
    summary: str
    names_customer: bool            # SUMMARY or LOCATION names the customer
    location: str
    description: str
    start: dt.datetime              # local wall time in ``tzid``, or UTC
    minutes: int
    tzid: Optional[str]             # None: UTC ("Z")
    weekly: bool
    attendees: list[tuple[str, str, str]]   # (CN, e-mail, kind: existing/new-domain/new-free)
    internal: list[tuple[str, str]]          # the rep and colleagues listed as attendees
    prodid: str

    @property
    def new_addresses(self) -> list[str]:
        return [a for _, a, kind in self.attendees if kind != "existing"]

    @property
    def business(self) -> bool:
        """Whether an external attendee is at the customer's own domain."""
        return any(not normalize.domain_matches(normalize.domain_of(a), FREE_MAIL_DOMAINS)
                   for _, a, _ in self.attendees)


SUMMARIES_NAMING = ["Quarterly review – {c}", "{c}: pricing negotiation", "Visit {c}",
                    "Meeting with {c} about the framework contract", "{c} – site visit",
                    "Kick-off {c}", "Návšteva {c}", "Besuch bei {c}", "{c} 年度合作洽谈"]
SUMMARIES_GENERIC = ["Project sync", "Follow-up call", "Product demo", "Contract renewal",
                     "Technical workshop", "Lunch", "Status meeting", "Porada k dodávkam",
                     "Obchodné stretnutie", "Besprechung Lieferplan", "项目会议"]
PRODIDS = ["-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN", "-//Apple Inc.//macOS 14.5//EN",
           "-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN"]
BASE_DAY = dt.datetime(2025, 9, 1, 0, 0)


def plan_events(rng: random.Random, seeded: Seeded, n: int) -> list[EventPlan]:
    plans = []
    for _ in range(n):
        cid, cname, domain, lang = rng.choice(seeded.customers)
        theirs = list(seeded.contacts_of.get(cid, []))
        attendees: list[tuple[str, str, str]] = []
        for _slot in range(rng.choice((2, 3, 4))):
            roll = rng.random()
            if roll < 0.6:           # someone already in the CRM, usually of this customer
                pool = theirs if theirs and rng.random() < 0.75 else \
                    seeded.free_contacts[rng.choice(LANGUAGES)]
                name, address = rng.choice(pool)
                if any(address == a for _, a, _ in attendees):
                    name, address = rng.choice(seeded.free_contacts[lang])
                if any(address == a for _, a, _ in attendees):
                    continue
                attendees.append((name, address, "existing"))
            elif roll < 0.8:         # a new face at the customer
                name, local = person(rng, lang)
                attendees.append((name, seeded.addresses.make(local, domain), "new-domain"))
            else:                    # a new face on free-mail
                person_lang = rng.choice(LANGUAGES)
                name, local = person(rng, person_lang)
                attendees.append((name, seeded.addresses.make(
                    local, rng.choice(FREE_MAIL[person_lang]), rng), "new-free"))
        # Without a legal form half of the time, as people write it.
        if rng.random() < 0.5:
            said = cname
        elif lang == "cn":
            said = cname.replace("有限公司", "").replace("股份", "").replace("有限责任公司", "")
        else:
            said = cname.rsplit(" ", 1)[0].rstrip(",")
        names_customer = rng.random() < 0.4
        summary = rng.choice(SUMMARIES_NAMING).format(c=said) if names_customer else \
            rng.choice(SUMMARIES_GENERIC)
        roll = rng.random()
        if roll < 0.3:
            location = f"{cname}, {rng.choice(CITIES[lang])}"
            names_customer = True
        elif roll < 0.55:
            location = rng.choice(["Microsoft Teams Meeting", "Zoom", "Google Meet"])
        elif roll < 0.8:
            location = rng.choice(CITIES[lang])
        else:
            location = ""
        internal = []
        if rng.random() < 0.4:
            internal.append(("Bench Rep", REP_EMAIL))
        if rng.random() < 0.25:
            internal.append(rng.choice(COLLEAGUES))
        minutes = rng.choice((30, 60, 60, 90, 120))
        day = BASE_DAY + dt.timedelta(days=rng.randrange(365), hours=rng.choice(range(8, 17)),
                                      minutes=rng.choice((0, 0, 30)))
        description = rng.choice(["Agenda: open orders, delivery schedule, pricing for next "
                                  "year.", "Follow-up of the last meeting; bring the samples.",
                                  ""])
        plans.append(EventPlan(
            customer_id=cid, lang=lang, summary=summary, names_customer=names_customer,
            location=location, description=description, start=day, minutes=minutes,
            tzid=None if rng.random() < 0.3 else TIMEZONES[lang],
            weekly=rng.random() < 0.05, attendees=attendees, internal=internal,
            prodid=rng.choice(PRODIDS)))
    return plans


def render(plan: EventPlan, uid: str) -> str:
    stamp = "20250825T080000Z"
    end = plan.start + dt.timedelta(minutes=plan.minutes)
    if plan.tzid:
        when = [f"DTSTART;TZID={plan.tzid}:{plan.start:%Y%m%dT%H%M%S}",
                f"DTEND;TZID={plan.tzid}:{end:%Y%m%dT%H%M%S}"]
    else:
        when = [f"DTSTART:{plan.start:%Y%m%dT%H%M%SZ}", f"DTEND:{end:%Y%m%dT%H%M%SZ}"]
    people = [f"ATTENDEE;CN={cn};PARTSTAT=ACCEPTED;ROLE=CHAIR:mailto:{address}"
              if address == REP_EMAIL else
              f"ATTENDEE;CN={cn};CUTYPE=INDIVIDUAL;PARTSTAT=NEEDS-ACTION;"
              f"ROLE=REQ-PARTICIPANT;RSVP=TRUE:mailto:{address}"
              for cn, address in plan.internal]
    people += [f"ATTENDEE;CN={cn};CUTYPE=INDIVIDUAL;PARTSTAT=NEEDS-ACTION;"
               f"ROLE=REQ-PARTICIPANT;RSVP=TRUE:mailto:{address}"
               for cn, address, _ in plan.attendees]
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:{plan.prodid}", "CALSCALE:GREGORIAN"]
    lines += vtimezone(plan.tzid) if plan.tzid else []
    lines += ["BEGIN:VEVENT", f"CREATED:{stamp}", f"LAST-MODIFIED:{stamp}", f"DTSTAMP:{stamp}",
              f"UID:{uid}", f"SUMMARY:{escape(plan.summary)}",
              f"ORGANIZER;CN=Bench Rep:mailto:{REP_EMAIL}", *people, *when]
    lines += ["RRULE:FREQ=WEEKLY;COUNT=10"] if plan.weekly else []
    lines += [f"LOCATION:{escape(plan.location)}"] if plan.location else []
    lines += [f"DESCRIPTION:{escape(plan.description)}"] if plan.description else []
    lines += ["SEQUENCE:0", "STATUS:CONFIRMED", "TRANSP:OPAQUE", "END:VEVENT", "END:VCALENDAR"]
    return "\r\n".join(fold(line) for line in lines) + "\r\n"


# --- measuring ---------------------------------------------------------------------------------

def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[94] if len(values) >= 2 else values[0]


def summarize(latencies: list[float], statements: list[int]) -> dict:
    ms = [v * 1000 for v in latencies]
    tenth = max(1, len(ms) // 10)
    return dict(puts=len(ms), median_ms=statistics.median(ms), p95_ms=p95(ms),
                mean_ms=statistics.fmean(ms), first_tenth_median_ms=statistics.median(ms[:tenth]),
                last_tenth_median_ms=statistics.median(ms[-tenth:]),
                statements_mean=statistics.fmean(statements), statements_min=min(statements),
                statements_max=max(statements), statements_median=statistics.median(statements))


def machine_info(engine) -> dict:
    with engine.connect() as conn:
        server = conn.execute(text("SELECT version()")).scalar() \
            if engine.dialect.name == "postgresql" else \
            "SQLite " + conn.exec_driver_sql("SELECT sqlite_version()").scalar()
    return dict(cpu_count=os.cpu_count(), python=sys.version.split()[0],
                platform=platform.platform(), machine=platform.machine(),
                processor=platform.processor() or None, sqlalchemy=sqlalchemy.__version__,
                database=server, date=dt.datetime.now(dt.timezone.utc).isoformat(
                    timespec="seconds"))


def count(conn, model) -> int:
    return conn.execute(select(func.count()).select_from(model)).scalar_one()


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--puts", type=int, default=1000, help="measured PUTs per mode")
    parser.add_argument("--warmup", type=int, default=10,
                        help="PUTs per mode before measuring (checked, not timed)")
    parser.add_argument("--quick", action="store_true",
                        help="10,000 contacts, 2,000 customers, 300 PUTs")
    parser.add_argument("--seed", type=int, default=20250901)
    parser.add_argument("--no-cards", action="store_true",
                        help="do not seed the attached contacts' published cards")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="afterwards, N more ingesting PUTs under cProfile")
    parser.add_argument("--profile-out", default="", metavar="FILE",
                        help="also save the raw profile there (for pstats/snakeviz)")
    parser.add_argument("--trace", type=int, default=0, metavar="N",
                        help="afterwards, print the SQL statements of N more ingesting PUTs")
    parser.add_argument("--db-url", default="", help="default: a fresh SQLite file; "
                        "postgresql://...: a fresh database on that server")
    parser.add_argument("--out", default="", metavar="FILE", help="the JSON figures (default: "
                        "bench/results/ingest_cost-<sqlite|postgresql>[-quick].json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.contacts, args.customers, args.puts = 10_000, 2_000, 300
    with fresh_database(args.db_url) as url:
        run(url, args)


def run(url: str, args) -> None:
    rng = random.Random(args.seed)
    engine = db.shared_engine(url)       # the app's storage and auth share this engine
    backend = engine.dialect.name
    schema.upgrade(engine)
    with Session(engine) as session, session.begin():
        users.add_user(session, REP, PASSWORD, email=REP_EMAIL)
    print(f"database: {backend}  ({args.customers:,} customers, {args.contacts:,} contacts, "
          f"{args.puts:,} measured PUTs per mode)")

    seeded = seed(engine, rng, args.customers, args.contacts, with_cards=not args.no_cards)
    t = seeded.timings
    print("seeded in %.1f s (generating %.1f s, inserting %.1f s, cards %.1f s, "
          "vacuum+analyze %.1f s)"
          % (t["total_s"], t["generate_customers_s"] + t["generate_contacts_s"], t["insert_s"],
             t["cards_s"], t["analyze_s"]))
    print("  rows: " + ", ".join(f"{k} {v:,}" for k, v in seeded.rows.items()))

    app = CrmApplication(make_configuration(url, storage={"crm_internal_domains": INTERNAL}))
    storage = app._storage
    assert storage.uow.engine is engine, "the app must use the engine we count statements on"
    hooks = {"on": storage.hooks, "off": Hooks(AuditHooks())}
    dav = Dav(app, REP, PASSWORD)
    assert dav.propfind(f"/{REP}/").status == 207
    for mode in ("off", "on"):
        assert dav.mkcalendar(f"/{REP}/{mode}/").status == 201

    total = args.warmup + args.puts
    plans = plan_events(rng, seeded, total)
    bodies = {mode: [render(p, f"{mode}-{i}@bench.{INTERNAL}") for i, p in enumerate(plans)]
              for mode in ("off", "on")}
    sizes = [len(b.encode()) for b in bodies["on"]]

    with engine.connect() as conn:
        cards_before = count(conn, ContactCard)
    statements = [0]

    def count_statement(*_) -> None:
        statements[0] += 1

    event.listen(engine, "before_cursor_execute", count_statement)
    load_before = os.getloadavg()   # other work on the machine shows up here
    latencies: dict[str, list[float]] = {"off": [], "on": []}
    counts: dict[str, list[int]] = {"off": [], "on": []}
    statuses: Counter = Counter()
    started = time.perf_counter()
    for i in range(total):
        # Alternate which mode goes first, so neither always follows the other.
        for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):
            storage.hooks = hooks[mode]
            statements[0] = 0
            t0 = time.perf_counter()
            reply = dav.put(f"/{REP}/{mode}/e{i}.ics", bodies[mode][i])
            elapsed = time.perf_counter() - t0
            statuses[reply.status] += 1
            assert reply.status == 201, (mode, i, reply.status, reply.text[:500])
            if i >= args.warmup:
                latencies[mode].append(elapsed)
                counts[mode].append(statements[0])
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    storage.hooks = hooks["on"]
    event.remove(engine, "before_cursor_execute", count_statement)

    # --- checks -------------------------------------------------------------------------
    new_addresses = {a for p in plans for a in p.new_addresses}
    intended = {f"on-{i}@bench.{INTERNAL}": p for i, p in enumerate(plans)}
    with engine.connect() as conn:
        visits = conn.execute(select(Visit.uid, Visit.customer_id, Visit.match_method)).all()
        placed_off = conn.execute(select(func.count()).select_from(VisitPlacement).where(
            VisitPlacement.collection_path == f"{REP}/off")).scalar_one()
        contacts_now = count(conn, Contact)
        methods = dict(conn.execute(text("SELECT match_method, count(*) FROM crm_visits "
                                         "GROUP BY 1 ORDER BY 2 DESC")).all())
        duplicates = count(conn, DuplicateCandidate)
        card_count = count(conn, ContactCard)
        # Seeded cards have revision 1; ingestion rewriting one would give it a later one.
        cards_kept = conn.execute(select(func.count()).select_from(DavItem).where(
            DavItem.collection_id.in_(seeded.card_books), DavItem.revision == 1)).scalar_one()
    assert statuses == Counter({201: 2 * total}), statuses
    assert len(visits) == total, f"{len(visits)} visits for {total} ingested events"
    assert {v.uid for v in visits} == set(intended), "visits are not exactly the ON events"
    assert placed_off == 0, f"{placed_off} visits placed from the OFF calendar"
    seeded_cards = seeded.rows.get("crm_contact_cards", 0)
    assert cards_kept == seeded_cards, f"{seeded_cards - cards_kept} seeded cards rewritten"
    assert contacts_now == args.contacts + len(new_addresses), \
        (contacts_now, args.contacts, len(new_addresses))
    # Whether each visit got the customer the event was about, by what the event offered.
    tagged: dict[str, Counter] = defaultdict(Counter)
    for uid, customer_id, method in visits:
        plan = intended[uid]
        path = "business attendee" if plan.business else \
            ("free-mail only, customer named" if plan.names_customer
             else "free-mail only, not named")
        tagged[path]["right" if customer_id == plan.customer_id else
                     "untagged" if customer_id is None else "other customer"] += 1
        if plan.business:
            assert method == "domain" and customer_id == plan.customer_id, (uid, method)

    off, on = summarize(latencies["off"], counts["off"]), summarize(latencies["on"], counts["on"])
    paired = [(b - a) * 1000 for a, b in zip(latencies["off"], latencies["on"])]
    cost = dict(median_ms=on["median_ms"] - off["median_ms"], p95_ms=on["p95_ms"] - off["p95_ms"],
                mean_ms=on["mean_ms"] - off["mean_ms"], paired_median_ms=statistics.median(paired),
                statements_mean=on["statements_mean"] - off["statements_mean"])

    print(f"\n{2 * total:,} PUTs in {wall:.1f} s; events {min(sizes)}-{max(sizes)} bytes "
          f"(mean {statistics.fmean(sizes):.0f}); first {args.warmup} per mode not timed; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{'':18}{'median ms':>10}{'p95 ms':>9}{'mean ms':>9}{'1st/last 10% ms':>17}"
          f"{'SQL/PUT mean':>14}{'(min-max)':>11}")
    for label, s in (("ingestion OFF", off), ("ingestion ON", on)):
        print(f"{label:18}{s['median_ms']:10.2f}{s['p95_ms']:9.2f}{s['mean_ms']:9.2f}"
              f"{s['first_tenth_median_ms']:9.2f}/{s['last_tenth_median_ms']:<7.2f}"
              f"{s['statements_mean']:14.1f}{s['statements_min']:>5}-{s['statements_max']:<5}")
    print(f"{'cost (ON - OFF)':18}{cost['median_ms']:10.2f}{cost['p95_ms']:9.2f}"
          f"{cost['mean_ms']:9.2f}{'':17}{cost['statements_mean']:14.1f}")
    print(f"{'paired median':18}{cost['paired_median_ms']:10.2f}")
    print(f"\nchecks passed: {2 * total} x 201, {len(visits)} visits = ON events, contacts "
          f"{args.contacts:,} + {len(new_addresses):,} new attendee addresses = "
          f"{contacts_now:,}; nothing placed from the OFF calendar; "
          f"{seeded_cards:,} seeded cards found current")
    print("match methods: " + ", ".join(f"{m} {n}" for m, n in methods.items()))
    print("customer found: " + "; ".join(
        f"{path}: " + ", ".join(f"{outcome} {n}" for outcome, n in sorted(tagged[path].items()))
        for path in sorted(tagged)))
    print(f"duplicate candidates recorded: {duplicates:,} "
          f"({duplicates / max(1, len(new_addresses)):.1f} per new contact); "
          f"contact cards published: {card_count - cards_before:,}")

    profile = profile_puts(dav, seeded, rng, args.profile, args.profile_out) \
        if args.profile else None
    if args.trace:
        trace_puts(dav, engine, seeded, rng, args.trace)

    results = dict(
        benchmark="ingest_cost", backend=backend, machine=machine_info(engine),
        config=dict(contacts=args.contacts, customers=args.customers, puts=args.puts,
                    warmup=args.warmup, seed=args.seed, quick=args.quick,
                    seeded_cards=not args.no_cards,
                    event_bytes_mean=statistics.fmean(sizes), event_bytes_min=min(sizes),
                    event_bytes_max=max(sizes)),
        seeding=dict(seconds=seeded.timings, rows=seeded.rows),
        off=off, on=on, ingestion_cost=cost, wall_seconds=wall,
        load_average=dict(before=load_before, after=load_after),
        checks=dict(visits=len(visits), on_events=total, new_contacts=len(new_addresses),
                    contacts_after=contacts_now, match_methods=methods,
                    customer_found={path: dict(c) for path, c in sorted(tagged.items())},
                    duplicate_candidates=duplicates,
                    contact_cards_published=card_count - cards_before),
        profile=profile)
    out = args.out or os.path.join(ROOT, "bench", "results", f"ingest_cost-{backend}"
                                   f"{'-quick' if args.quick else ''}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(results, f, indent=2, ensure_ascii=False)
    os.replace(out + ".tmp", out)
    print(f"\nwritten: {os.path.relpath(out, ROOT)}")


def profile_puts(dav: Dav, seeded: Seeded, rng: random.Random, n: int, out: str) -> dict:
    """N more ingesting PUTs under cProfile: where the time goes, by cumulative time."""
    bodies = [render(p, f"prof-{i}@bench.{INTERNAL}")
              for i, p in enumerate(plan_events(rng, seeded, n))]
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for i, body in enumerate(bodies):
        assert dav.put(f"/{REP}/on/prof{i}.ics", body).status == 201
    profiler.disable()
    elapsed = time.perf_counter() - started
    if out:
        profiler.dump_stats(out)
    report = io.StringIO()
    stats = pstats.Stats(profiler, stream=report)   # full paths: hot spots as file:line
    stats.sort_stats("cumulative").print_stats(40)                       # everything
    stats.print_stats(re.escape(os.path.join(ROOT, "server", "")), 40)   # ours only
    stats.sort_stats("tottime").print_stats(20)
    report_text = re.sub(r"\S*/site-packages/", "", report.getvalue().replace(ROOT + "/", ""))
    print(f"\n--- cProfile: {n} ingesting PUTs, {elapsed * 1000 / n:.2f} ms each under the "
          f"profiler ---")
    print(report_text)
    return dict(puts=n, ms_per_put_profiled=elapsed * 1000 / n, report=report_text)


def trace_puts(dav: Dav, engine, seeded: Seeded, rng: random.Random, n: int) -> None:
    """N more ingesting PUTs, each with the SQL statements it ran and their time in the
    driver (parameters left out)."""
    seen: list[list] = []

    def before(_conn, _cursor, statement, *_) -> None:
        seen.append([" ".join(statement.split()), time.perf_counter()])

    def after(*_) -> None:
        seen[-1][1] = time.perf_counter() - seen[-1][1]

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    for i, plan in enumerate(plan_events(rng, seeded, n)):
        seen.clear()
        body = render(plan, f"trace-{i}@bench.{INTERNAL}")
        t0 = time.perf_counter()
        assert dav.put(f"/{REP}/on/trace{i}.ics", body).status == 201
        total = time.perf_counter() - t0
        in_driver = sum(t for _, t in seen)
        print(f"\n--- PUT {i}: {len(plan.attendees)} attendees, {len(plan.new_addresses)} new; "
              f"{len(seen)} statements, {in_driver * 1000:.2f} of {total * 1000:.2f} ms in "
              f"the driver ---")
        for statement, elapsed in seen:
            print(f"  {elapsed * 1000:6.2f} ms  {statement[:140]}")
    event.remove(engine, "before_cursor_execute", before)
    event.remove(engine, "after_cursor_execute", after)


if __name__ == "__main__":
    main()
