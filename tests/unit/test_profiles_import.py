"""Personal data masking and the customer import's row checks (pure parts)."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openpyxl import Workbook

from memberflow.importing import ImportRefused, check, read_table
from shared.profiles import mask_address, mask_name, mask_phone, shown
from shared.shopconfig import parse

CONFIG = parse({
    "shop_id": "tea", "name": "茶馆",
    "levels": {"basis": "amount", "ladder": [
        {"name": "银卡", "threshold": "100.00", "discount": "0.98"},
        {"name": "金卡", "threshold": "500.00", "discount": "0.95"}]},
    "tagging": {"tags": [{"id": "vip", "name": "贵宾"}, {"id": "big", "name": "大客户"}],
                "rules": [{"id": "r-big", "tag": "big", "when": "spend >= 1000"}]}})


def test_the_classic_masks() -> None:
    assert mask_phone("13812345678") == "138****5678"
    assert mask_name("张三丰") == "张**" and mask_name("Ann") == "A**" and mask_name("李") == "李*"
    assert mask_address("上海市浦东新区世纪大道100号") == "上海市浦东新****"


@given(st.text(alphabet="0123456789", min_size=1, max_size=20))
def test_a_masked_phone_keeps_its_length_and_hides_the_middle(phone: str) -> None:
    masked = mask_phone(phone)
    assert len(masked) == len(phone)
    hidden = masked.count("*")
    assert hidden >= min(len(phone), 2) or len(phone) <= 2
    if len(phone) >= 11:
        assert masked[:3] == phone[:3] and masked[-4:] == phone[-4:] and hidden == len(phone) - 7


@given(st.text(min_size=1, max_size=60))
def test_masked_text_never_shows_more_than_its_opening(text: str) -> None:
    assert mask_name(text)[1:].strip("*") == "" and mask_name(text)[0] == text[0]
    kept = mask_address(text).removesuffix("****")
    assert mask_address(text).endswith("****") and kept in ("", text[:6])


def test_shown_unmasks_only_when_allowed() -> None:
    profile = {"name": "张三丰", "phone": "13812345678", "address": None}
    assert shown(profile, True) == profile
    assert shown(profile, False) == {"name": "张**", "phone": "138****5678", "address": None}


def csv_rows(text: str) -> list[tuple[int, dict[str, str]]]:
    return list(read_table("members.csv", text.encode("utf-8-sig")))


def test_chinese_headers_levels_by_name_and_manual_tags_by_name() -> None:
    rows = check(iter(csv_rows(
        "会员ID,姓名,手机,地址,地区,标签,等级\n"
        "m1,张三,138 1234 5678,上海市浦东新区,上海,贵宾,金卡\n"
        "m2,,,,,,1\n")), CONFIG)
    assert [(r.member_id, r.phone, r.level, r.tags) for r in rows] == [
        ("m1", "13812345678", 2, ("vip",)), ("m2", None, 1, ())]


def test_every_problem_is_named_by_line_and_column_and_nothing_passes() -> None:
    with pytest.raises(ImportRefused) as refused:
        check(iter(csv_rows(
            "member_id,phone,level,tags\n"
            "m1,13812345678,3,vip\n"
            ",123,,\n"
            "m1,call me,,big\n"
            "m4,,钻石卡,nope\n")), CONFIG)
    said = [str(p) for p in refused.value.problems]
    assert said == [
        "line 2, level: '3' is not a level of this shop (0, 1 银卡, 2 金卡)",
        "line 3, member_id: is empty",
        "line 3, phone: '123' is not a phone number (digits, optionally +, spaces, -)",
        "line 4, member_id: 'm1' is already on line 2",
        "line 4, phone: 'call me' is not a phone number (digits, optionally +, spaces, -)",
        "line 4, tags: 'big' follows rule 'r-big'; it cannot be set by import",
        "line 5, level: '钻石卡' is not a level of this shop (0, 1 银卡, 2 金卡)",
        "line 5, tags: 'nope' is not a tag of this shop",
    ]


def test_a_file_without_a_member_column_or_rows_is_refused() -> None:
    with pytest.raises(ImportRefused, match="no member id column"):
        check(iter(csv_rows("name,phone\nA,13812345678\n")), CONFIG)
    with pytest.raises(ImportRefused, match="no rows"):
        check(iter(csv_rows("member_id\n")), CONFIG)


def test_xlsx_numbers_become_the_text_people_typed() -> None:
    book = Workbook()
    sheet = book.active
    sheet.append(["会员ID", "手机", "等级"])
    sheet.append([10001, 13812345678, 1])
    buffer = io.BytesIO()
    book.save(buffer)
    rows = check(read_table("members.xlsx", buffer.getvalue()), CONFIG)
    assert [(r.member_id, r.phone, r.level) for r in rows] == [("10001", "13812345678", 1)]


def test_gb18030_csv_as_excel_in_china_saves_it() -> None:
    data = "会员ID,姓名\nm1,王五\n".encode("gb18030")
    rows = check(read_table("members.csv", data), CONFIG)
    assert rows[0].name == "王五"
