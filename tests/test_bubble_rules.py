"""The highlight-first bubble finder (`hair._ringed` and its rules) at each threshold (issue 18).

A bubble under the dermoscope's glass is a small highlight ringed by a dark rim; the scene
tests in test_measure.py show the finder works on drawn scenes, these put each of its rules
at its edge: how much a highlight outshines the inside, how much the inside glows over what
lies past the rim, how many rays meet the rim on one circle, how large that circle is, and
that the glow stays inside it. Images are drawn at the reference size (scale 1), where the
documented sizes are in pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from medsynth_kohya.data import hair

SKIN = 150
"""Skin level of the drawn images: a highlight must reach SKIN + 35 (hair.HIGHLIGHT)."""


@pytest.mark.parametrize(("peak", "inside", "expected"), [
    (115, 100.0, True), (114, 100.0, False),  # by 15 (SPOT_CONTRAST) on darker skin
    (240, 225.0, True), (239, 225.0, False),  # half the room below white is 15 here too
    (241, 226.0, True), (240, 226.0, False),  # 14.5: the room, not 15, decides
    (248, 240.0, True), (247, 240.0, False),  # 7.5 on skin this light
    (255, 255.0, True)])
def test_a_highlight_outshines_the_inside_by_15_or_half_the_room_below_white(
        peak: int, inside: float, expected: bool) -> None:
    assert hair._outshines(peak, inside) is expected


def _disc_image(radius: int, *, tail: int = 0, tail_level: int = 0) -> np.ndarray:
    """A 101 px square of skin with a bright disc (220) of `radius` at (50, 50), and a line
    `tail_level` bright running `tail` px right from the disc's edge."""
    image = np.full((101, 101), SKIN, np.uint8)
    cv2.circle(image, (50, 50), radius, 220, -1)
    if tail:
        image[50, 50 + radius:50 + radius + tail] = tail_level
    return image


@pytest.mark.parametrize(("disc", "radius", "expected"), [
    (5, 5.0, True), (6, 5.0, True), (7, 5.0, False), (8, 7.9, True), (9, 7.9, False)])
def test_a_glow_is_confined_when_it_stays_within_the_circle_and_two_pixels(
        disc: int, radius: float, expected: bool) -> None:
    assert hair._confined(_disc_image(disc), 200.0, np.array([50.0, 50.0]), radius) is expected


def test_a_glow_running_on_out_of_the_circle_is_not_confined_at_or_above_its_level() -> None:
    image = _disc_image(4, tail=20, tail_level=180)
    spot = np.array([50.0, 50.0])
    assert not hair._confined(image, 180.0, spot, 6.0)  # the tail is as bright as the level
    assert hair._confined(image, 181.0, spot, 6.0)
    # what is bright but not joined to the spot does not count
    image[50, 54:74] = SKIN
    image[20, 10:90] = 255
    assert hair._confined(image, 180.0, spot, 6.0)


def test_a_glow_is_joined_to_the_spot_through_its_eight_neighbours() -> None:
    """The spot's own pixel may be a shade darker than the highlight beside it."""
    image = _disc_image(12)
    image[50, 50] = SKIN
    assert not hair._confined(image, 200.0, np.array([50.0, 50.0]), 5.0)
    image = np.full((101, 101), SKIN, np.uint8)
    image[52:, :] = 255  # bright, but two pixels off the spot: not its glow
    assert hair._confined(image, 200.0, np.array([50.0, 50.0]), 5.0)


def _rays(reach: np.ndarray, size: int = 90) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hit (1 spot, ray, step) with each ray's first hit at `reach` (0: none), steps, angles."""
    steps = np.arange(1.0, size + 1)
    angles = np.linspace(0, 2 * np.pi, len(reach), endpoint=False)
    hit = (steps[None, :] == reach[:, None])[None]
    return hit, steps, angles


def _circle_reach(radius: float, offset: tuple[float, float], rays: int = 24) -> np.ndarray:
    """How far each of `rays` rays from a spot `offset` off a circle's centre runs to it."""
    angles = np.linspace(0, 2 * np.pi, rays, endpoint=False)
    dx, dy = np.cos(angles), np.sin(angles)
    ox, oy = -offset[0], -offset[1]  # the centre, seen from the spot
    along = dx * ox + dy * oy
    return np.round(along + np.sqrt(along**2 - (ox**2 + oy**2) + radius**2))


@pytest.mark.parametrize(("radius", "scale", "expected"), [
    (12, 1.0, True), (44, 1.0, True), (5, 1.0, False), (46, 1.0, False),
    (5, 0.75, True), (4, 0.75, False), (33, 0.75, True), (35, 0.75, False)])
def test_a_ring_is_a_circle_of_a_bubble_s_radius(radius: int, scale: float,
                                                  expected: bool) -> None:
    """BUBBLE_RADIUS: 6 to 45 reference pixels."""
    hit, steps, angles = _rays(_circle_reach(radius, (0, 0)))
    reach, fitted, ringed, centre = hair._circles(hit, steps, angles, scale)
    assert np.allclose(reach[0], radius) and abs(fitted[0] - radius) < 0.5
    assert np.abs(centre[0]).max() < 0.5
    assert bool(ringed[0]) is expected


@pytest.mark.parametrize(("missing", "expected"), [(6, True), (7, False)])
def test_three_quarters_of_the_rays_meet_the_ring(missing: int, expected: bool) -> None:
    """RING_SHARE of RAYS (18 of 24): a crossing hair or a touching bubble takes the rest."""
    distances = _circle_reach(12, (0, 0))
    distances[:missing] = 0
    hit, steps, angles = _rays(distances)
    reach, _, ringed, _ = hair._circles(hit, steps, angles, 1.0)
    assert bool(ringed[0]) is expected
    assert np.array_equal(reach[0], distances)  # 0 where a ray meets nothing


def test_rays_that_meet_something_nearer_are_left_out_of_the_circle() -> None:
    """Four rays stopped by a hair near the spot: the circle is refitted on the others."""
    distances = _circle_reach(14, (0, 0))
    distances[[0, 1, 2, 3]] = 3
    hit, steps, angles = _rays(distances)
    _, radius, ringed, _ = hair._circles(hit, steps, angles, 1.0)
    assert ringed[0] and abs(radius[0] - 14) < 0.5


@pytest.mark.parametrize(("offset", "expected"), [(0.0, True), (0.6, True), (0.95, False)])
def test_the_highlight_lies_well_inside_its_ring(offset: float, expected: bool) -> None:
    """Within 0.8 of the radius from the centre (a bubble's highlight is drawn at two thirds),
    not on the rim as a glint beside a hair the circle follows."""
    hit, steps, angles = _rays(_circle_reach(20, (offset * 20, 0)))
    _, _, ringed, centre = hair._circles(hit, steps, angles, 1.0)
    assert bool(ringed[0]) is expected
    assert np.allclose(centre[0], (-offset * 20, 0), atol=0.5)  # seen from the spot


def _profile(inside: int, outside: int, *, rays: int = 24, rim: int = 12, size: int = 40
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shades along `rays` rays (inside, a dark rim at `rim` 2 px wide, outside), where they
    hit the rim, their reach and the steps."""
    steps = np.arange(1.0, size + 1)
    shades = np.where(steps < rim, inside, outside).astype(np.uint8)
    shades = np.tile(shades, (rays, 1))
    shades[:, rim - 1:rim + 1] = 60
    hit = np.tile((steps >= rim) & (steps <= rim + 1), (rays, 1))
    return shades, hit, np.full(rays, float(rim)), steps


@pytest.mark.parametrize(("outside", "expected"), [(172, 180.0), (173, None)])
def test_the_inside_glows_8_over_what_lies_past_the_rim(outside: int,
                                                         expected: float | None) -> None:
    shades, hit, reach, steps = _profile(180, outside)
    assert hair._lit(shades, hit, reach, steps, 210) == expected


@pytest.mark.parametrize(("peak", "expected"), [(195, 180.0), (194, None)])
def test_the_spot_outshines_the_inside_it_lights(peak: int, expected: float | None) -> None:
    shades, hit, reach, steps = _profile(180, 160)
    assert hair._lit(shades, hit, reach, steps, peak) == expected


@pytest.mark.parametrize(("bright_rays", "expected"), [(1, 180.0), (2, None)])
def test_one_ray_may_run_on_bright_past_the_rim_not_two(bright_rays: int,
                                                         expected: float | None) -> None:
    """A light hair runs on through the rim; one ray bright past it may be a glint."""
    shades, hit, reach, steps = _profile(180, 160)
    shades[:bright_rays, 15] = 195  # (inside + peak) / 2 = 195: as bright counts
    assert hair._lit(shades, hit, reach, steps, 210) == expected


def test_no_inside_or_no_outside_lights_nothing() -> None:
    shades, hit, reach, steps = _profile(180, 160)
    assert hair._lit(shades, hit, np.zeros_like(reach), steps, 210) is None
    shades, hit, reach, steps = _profile(180, 160, rim=38)  # the rim at the rays' ends
    hit[:, 37:] = True
    assert hair._lit(shades, hit, reach, steps, 210) is None


def _bubble(*, radius: int = 14, spot: int = 1, spot_level: int = 230, gap: float = 0.0,
            inside: int = 170) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """value, dark_line and hair masks of skin with one bubble at (100, 100): a dark rim
    (missing over `gap` of its turn), a brighter inside and a highlight of half-size `spot`."""
    value = np.full((200, 200), SKIN, np.uint8)
    cv2.circle(value, (100, 100), radius, inside, -1)
    rim = np.zeros_like(value)
    cv2.circle(rim, (100, 100), radius, 1, 2)
    if gap:
        angle = np.degrees(np.arctan2(*np.mgrid[-100:100, -100:100]))
        rim[(angle % 360) < 360 * gap] = 0
    value[rim > 0] = 90
    value[100 - spot:101 + spot, 100 - spot:101 + spot] = spot_level
    return value, rim.astype(bool), np.zeros_like(value)


def test_a_highlight_ringed_by_a_rim_is_one_bubble() -> None:
    value, dark_line, hair_mask = _bubble()
    assert hair._ringed(value, dark_line, hair_mask, SKIN, 1.0)[0] == 1
    # two bubbles side by side are two
    both = np.hstack([value, value])
    assert hair._ringed(both, np.hstack([dark_line] * 2), np.hstack([hair_mask] * 2), SKIN,
                        1.0)[0] == 2


def test_a_highlight_must_reach_the_highlight_level() -> None:
    """SKIN + HIGHLIGHT (35), or GLARE (245) on skin so light that it cannot."""
    for level, expected in ((185, 1), (184, 0)):
        value, dark_line, hair_mask = _bubble(spot_level=level)
        assert hair._ringed(value, dark_line, hair_mask, SKIN, 1.0)[0] == expected
    value, dark_line, hair_mask = _bubble(spot_level=245, inside=228)
    assert hair._ringed(value, dark_line, hair_mask, 220.0, 1.0)[0] == 1
    value, dark_line, hair_mask = _bubble(spot_level=244, inside=228)
    assert hair._ringed(value, dark_line, hair_mask, 220.0, 1.0)[0] == 0


@pytest.mark.parametrize(("spot", "expected"), [(4, 1), (5, 0)])
def test_a_highlight_is_small_against_its_bubble(spot: int, expected: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """At most SPOT_AREA (5 %) of the largest bubble radius squared: 45² x 0.05 = 101 px at
    scale 1 (a 9 x 9 spot is, an 11 x 11 one is not, and only that rule tells them apart)."""
    value, dark_line, hair_mask = _bubble(spot=spot, radius=20)
    assert hair._ringed(value, dark_line, hair_mask, SKIN, 1.0)[0] == expected
    monkeypatch.setattr(hair, "SPOT_AREA", 1.0)
    assert hair._ringed(value, dark_line, hair_mask, SKIN, 1.0)[0] == 1


def test_a_highlight_on_a_hair_is_no_bubble() -> None:
    value, dark_line, hair_mask = _bubble()
    hair_mask[100, 101] = 1
    assert hair._ringed(value, dark_line, hair_mask, SKIN, 1.0)[0] == 0


def test_a_ringed_highlight_gives_its_rim_lit_or_not() -> None:
    """The circle round a highlight off the hair is a rim (hair measurement erases it) even
    where the inside does not glow enough for a bubble (skin near white); a highlight on a
    hair gives none, nor does a highlight with no ring."""
    value, dark_line, hair_mask = _bubble(radius=18)
    count, rims = hair._ringed(value, dark_line, hair_mask, SKIN, 1.0)
    assert count == 1 and rims.shape[1] == 3
    assert np.allclose(rims[:, :2], 100, atol=1) and np.allclose(rims[:, 2], 18, atol=1)
    unlit, _, _ = _bubble(radius=18, inside=SKIN)  # no glow inside: no bubble, still a rim
    count, rims = hair._ringed(unlit, dark_line, hair_mask, SKIN, 1.0)
    assert count == 0 and len(rims) >= 1 and np.allclose(rims[:, 2], 18, atol=1)
    hair_mask[100, 101] = 1
    assert len(hair._ringed(value, dark_line, hair_mask, SKIN, 1.0)[1]) == 0
    bare, _, no_hair = _bubble(radius=18)
    assert len(hair._ringed(bare, np.zeros_like(dark_line), no_hair, SKIN, 1.0)[1]) == 0


@pytest.mark.parametrize(("gap", "expected"), [(0.2, 1), (0.3, 0)])
def test_a_rim_broken_over_more_than_a_quarter_rings_nothing(gap: float, expected: int) -> None:
    value, dark_line, hair_mask = _bubble(gap=gap)
    assert hair._ringed(value, dark_line, hair_mask, SKIN, 1.0)[0] == expected


def test_no_highlight_anywhere_is_no_bubble() -> None:
    value, dark_line, hair_mask = _bubble(spot_level=SKIN)
    assert hair._ringed(value, dark_line, hair_mask, SKIN, 1.0)[0] == 0


def test_a_bright_line_from_the_highlight_out_of_the_ring_is_no_bubble() -> None:
    """A light hair crossing a rimmed cell of the lesion's network: its glow runs on."""
    value, dark_line, hair_mask = _bubble()
    value[100, 100:160] = 230
    assert hair._ringed(value, dark_line, hair_mask, SKIN, 1.0)[0] == 0


def test_the_ring_is_sought_at_the_photo_s_scale() -> None:
    """At half the reference size the same bubble drawn half as large is still one bubble;
    at scale 1 a rim of radius 5 is below a bubble's 6 px."""
    value, dark_line, hair_mask = _bubble(radius=5)
    assert hair._ringed(value, dark_line, hair_mask, SKIN, 0.5)[0] == 1
    assert hair._ringed(value, dark_line, hair_mask, SKIN, 1.0)[0] == 0
    assert math.isclose(hair.BUBBLE_RADIUS[0], 6.0)


def _glow_from(offset: tuple[int, int]) -> np.ndarray:
    """Skin with a bright line (230) starting `offset` from the spot at (50, 50), whose own
    pixel stays skin, and running straight on away from it out of any window."""
    image = np.full((101, 101), SKIN, np.uint8)
    dx, dy = offset
    step = max(abs(dx), abs(dy))
    for k in range(step, 50):
        image[50 + dy * k // step, 50 + dx * k // step] = 230
    return image


@pytest.mark.parametrize("offset", [(-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1),
                                    (0, 1), (1, 1)])
def test_a_glow_touching_the_spot_s_neighbours_is_the_spot_s(offset: tuple[int, int]) -> None:
    assert not hair._confined(_glow_from(offset), 200.0, np.array([50.0, 50.0]), 5.0)


@pytest.mark.parametrize("offset", [(-2, 0), (2, 0), (0, -2), (0, 2), (2, 2), (-2, -2)])
def test_a_glow_two_pixels_off_the_spot_is_not_the_spot_s(offset: tuple[int, int]) -> None:
    assert hair._confined(_glow_from(offset), 200.0, np.array([50.0, 50.0]), 5.0)


@pytest.mark.parametrize("direction", [(1, 0), (0, 1), (-1, 0), (0, -1)])
def test_a_glow_reaching_the_window_s_edge_on_one_side_runs_on(
        direction: tuple[int, int]) -> None:
    """The window reaches int(radius) + 2 from the spot on every side: a glow that far on one
    side only runs on; one pixel short of it, it stays."""
    dx, dy = direction
    for length, expected in ((7, False), (6, True)):
        image = np.full((101, 101), SKIN, np.uint8)
        for k in range(length + 1):
            image[50 + dy * k, 50 + dx * k] = 230
        assert hair._confined(image, 200.0, np.array([50.0, 50.0]), 5.9) is expected


@pytest.mark.parametrize("corner", [(3, 50), (50, 3)])
def test_near_the_photo_s_edge_the_window_stops_at_it(corner: tuple[int, int]) -> None:
    """A glow that stays within its radius is confined even where its window is cut by the
    photo's first row or column; one that reaches the photo's edge is not."""
    x, y = corner
    image = np.full((101, 101), SKIN, np.uint8)
    cv2.circle(image, (x, y), 2, 230, -1)
    assert hair._confined(image, 200.0, np.array([float(x), float(y)]), 2.0)
    cv2.circle(image, (x, y), 3, 230, -1)
    assert not hair._confined(image, 200.0, np.array([float(x), float(y)]), 2.0)


def _stepped(inside: dict[int, int], outside: dict[int, int], *, hit_at: tuple[int, ...],
             default: int = 180, rays: int = 24, size: int = 40
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rays (all alike) with given shades per step (1-based), rim pixels at `hit_at`."""
    steps = np.arange(1.0, size + 1)
    row = np.full(size, default, np.uint8)
    for step, shade in {**inside, **outside}.items():
        row[step - 1] = shade
    shades = np.tile(row, (rays, 1))
    hit = np.tile(np.isin(steps, hit_at), (rays, 1))
    return shades, hit, np.full(rays, float(hit_at[0])), steps


def test_the_inside_is_read_from_step_two_to_four_fifths_of_the_rim() -> None:
    """Steps 2 to 0.8 x reach, the ends excluded: (2..4 at 200, 5..7 at 170) gives a
    median of 185 on a rim at 10; step 1 (the spot) and step 8 (the rim's blur) do not
    count."""
    inside = {1: 255, 2: 200, 3: 200, 4: 200, 5: 170, 6: 170, 7: 170, 8: 170, 9: 170}
    outside = {12: 160, 13: 160, 14: 160, 15: 160, 16: 160}
    shades, hit, reach, steps = _stepped(inside, outside, hit_at=(10, 11), default=160)
    assert hair._lit(shades, hit, reach, steps, 220) == 185.0


def test_past_the_rim_four_steps_are_read_after_the_first_clear_one() -> None:
    """The rim at 12-13, step 14 the first off it (the rim's edge, skipped), 15-18 read:
    their median 162.5 is 17.5 below the inside; 14-18, 16-18, 15-17 or 15-19 would read 175."""
    outside = {12: 190, 13: 190, 14: 190, 15: 150, 16: 175, 17: 175, 18: 150}
    shades, hit, reach, steps = _stepped({}, outside, hit_at=(12, 13), size=30)
    shades[:, 18:] = 175
    assert hair._lit(shades, hit, reach, steps, 210) == 180.0


def test_rays_that_meet_no_rim_are_not_read() -> None:
    """Rays with no hit (reach 0) or the rim at the first step add nothing inside or past it."""
    shades, hit, reach, steps = _profile(180, 160)
    shades[:6] = 200
    hit[:6] = False
    reach[:6] = 0
    assert hair._lit(shades, hit, reach, steps, 210) == 180.0
    shades, hit, reach, steps = _profile(180, 160)
    hit[:2] = False
    hit[:2, 0] = True
    reach[:2] = 1
    shades[:2, 2:8] = 200  # past a rim at step 1: bright, as a light hair running on
    assert hair._lit(shades, hit, reach, steps, 210) is None


@pytest.mark.parametrize("spot", [(50, 1), (1, 50)])
def test_a_glow_along_the_photo_s_edge_beside_the_spot_is_the_spot_s(
        spot: tuple[int, int]) -> None:
    """A spot one pixel off the photo's edge: its neighbours on the edge are looked at too."""
    x, y = spot
    image = np.full((101, 101), SKIN, np.uint8)
    if y == 1:
        image[0, x:x + 20] = 230
    else:
        image[y:y + 20, 0] = 230
    assert not hair._confined(image, 200.0, np.array([float(x), float(y)]), 5.0)


@pytest.mark.parametrize(("spot", "expected"), [
    ((9, 5), 1), ((10, 5), 0),  # area: 0.05 x (45 x 2/3)² = 45 px
    ((30, 1), 1), ((31, 1), 0)])  # extent: the largest radius, 30 px
def test_a_highlight_is_at_most_the_area_and_length_its_scale_allows(
        spot: tuple[int, int], expected: int) -> None:
    """At scale 2/3 the largest bubble radius is 30 px: a highlight of 45 px or 30 px long is
    still one, a pixel more is not."""
    width, height = spot
    value, dark_line, hair_mask = _bubble(radius=22, spot=0)
    value[100, 100] = value[99, 100]
    left, top = 100 - width // 2, 100 - height // 2
    value[top:top + height, left:left + width] = 230
    assert hair._ringed(value, dark_line, hair_mask, SKIN, 2 / 3)[0] == expected
