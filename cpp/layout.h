// Layout analysis of a video's sampled frames: where is the picture inside the frame?
//
// Copies that fill only part of the frame (side-by-side or top-bottom stacks, grids,
// picture-in-picture, letterbox/pillarbox/meme bars, padding after a rotation) defeat a
// global frame descriptor. analyze_layout looks at one video's frames and returns, in frame
// coordinates (the coded frame, before any display rotation):
//   * per frame: the content rectangle inside uniform borders, and the strongest straight
//     vertical/horizontal seam with the share of rows/columns supporting it;
//   * per video: the persistent content rectangle (borders cropped), a grid of cells split
//     by seams that persist at the same position across frames, or else a picture-in-picture
//     window whose edges persist, each with a confidence; and whether the content has the
//     shape of a rotated picture (portrait content inside a landscape frame or the reverse).
// The decision uses that video's frames only (a video's descriptors depend on it alone).
//
// Thread-safety: analyze_layout is a pure function of its arguments (no global state, no
// shared pool): concurrent calls are safe. It is single-threaded; callers release the GIL.
//
// Note [Layout evidence]
// ----------------------
// Frames are analysed as luma (planar RGB input is converted with BT.601 weights).
//  1. Borders: from each side, lines (rows, then columns inside the remaining rows) whose
//     pixels are within border_tolerance of that side's outermost line's mean, for at least
//     border_fraction of the line, are border. A frame that is border throughout is blank and
//     ignored. Per video and side, the thickness is the largest t such that >= 80 % of the
//     usable frames have at least t - 1 (the 20th percentile): dark scenes only make single
//     frames' borders thicker. Its confidence is the share of frames within [t - 1, t + 3].
//  2. Steps: inside the video's content rectangle, a vertical step at column x (between x-1
//     and x) in row y has strength s = |I[x] + I[x+1] - I[x-1] - I[x-2]| (a 2-pixel scale, so
//     a seam blurred by resizing still gives one peak); it counts when s >= step_threshold
//     and s is the maximum of s[x-2 .. x+2] (ties go left). Horizontal steps likewise.
//     A resize blurs a seam identically in every row, so a seam's peaks sit on the same
//     column (or its neighbour: "pair bins" x, x+1 are counted together).
//  3. Seams: a column's coverage is the share of (frame, row) pairs with a step in its pair
//     bin; a seam needs coverage >= seam_coverage overall and >= 0.7 x that in each sixth of
//     the height (it spans the whole content, unlike a window's edge), a local maximum within +-4 columns, at least
//     10 % of the content away from its edges. It must also stand out from the columns 5-20 pixels away
//     on one side (coverage >= 0.2 above each of theirs): a pixelised picture's block lattice covers many
//     columns about equally. Textured natural images give ~0.2-0.35
//     coverage at random columns; a persistent seam between independent pictures ~0.6-0.95.
//     Cells must be textured (mean |gradient| >= min_texture, which rejects a flat sky above
//     a horizon) and the video must change over time (mean |frame difference| >= min_activity
//     in at least one cell: a static slide's edges persist trivially). A static cell between
//     changing ones (a meme bar with text) is dropped; if only one cell is left it becomes the
//     content rectangle.
//  4. Window: a pixel is persistent when it holds a step (pair bin) in >= edge_persistence of
//     the frames. A window is a rectangle (15-92 % of the content on each side, 4-85 % of its
//     area) whose sides are persistent over >= window_support of their length, with at least
//     three real sides (a side on the content boundary may be missing; a window in a corner
//     of the content has two, which then need a support >= max(window_support, 0.85)); at least one side of
//     every real edge must change over time, and so must the window's inside, between most
//     consecutive frames (median over frame pairs: a static box,
//     logo or sticker is an overlay, not a picture); each real side's support must exceed that
//     of every parallel line 5-20 pixels away on one side by 0.2 (no block lattice). Its confidence is the mean support of its four
//     sides (a missing side counts 0).
#pragma once

#include <cstdint>
#include <vector>

namespace vcd {

// Half-open pixel rectangle [x0, x1) x [y0, y1).
struct Rect {
  int32_t x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  int32_t width() const { return x1 - x0; }
  int32_t height() const { return y1 - y0; }
  int64_t area() const { return static_cast<int64_t>(width()) * height(); }
  bool operator==(const Rect& other) const {
    return x0 == other.x0 && y0 == other.y0 && x1 == other.x1 && y1 == other.y1;
  }
};

struct LayoutOptions {
  int border_tolerance = 12;      // gray levels a border pixel may differ from the border colour
  double border_fraction = 0.97;  // share of a line's pixels within tolerance for it to be border
  int min_border = 3;             // thinner borders are ignored (pixels)
  int step_threshold = 30;        // minimum 2-pixel step strength (Note [Layout evidence] 2)
  double seam_coverage = 0.5;     // minimum seam coverage (Note [Layout evidence] 3)
  double edge_persistence = 0.5;  // share of frames a window edge pixel must hold a step in
  double window_support = 0.7;    // share of a window side that must be persistent
  double min_texture = 3.0;       // minimum mean |gradient| of a cell (gray levels)
  double min_activity = 3.0;      // minimum mean |frame difference| (gray levels)
  int max_cells_per_axis = 3;     // at most this many cells across and down (1..4)
  int min_frames = 3;             // fewer usable frames: no seam or window decision
};

// What one frame shows.
struct FrameLayout {
  Rect content;                    // inside this frame's uniform borders (empty when blank)
  bool blank = false;              // uniform throughout
  int32_t vertical_seam = -1;      // column of the strongest vertical step line (-1: none)
  float vertical_coverage = 0;     // share of content rows with a step on that line
  int32_t horizontal_seam = -1;    // row of the strongest horizontal step line
  float horizontal_coverage = 0;   // share of content columns with a step on that line
};

// The per-video decision.
struct VideoLayout {
  int32_t frame_height = 0, frame_width = 0;
  int32_t usable_frames = 0;        // non-blank frames
  Rect content;                     // persistent content rectangle (the frame when no border)
  bool has_border = false;
  float border_confidence = 0;
  int32_t grid_rows = 1, grid_cols = 1;
  std::vector<int32_t> column_seams, row_seams;  // accepted seams (frame coordinates)
  std::vector<Rect> cells;          // the cells to embed (empty when not split)
  float grid_confidence = 0;        // weakest accepted seam's coverage (0 when not split)
  bool has_window = false;
  Rect window;                      // picture-in-picture window (when has_window)
  float window_confidence = 0;
  bool rotated = false;             // the content has the shape of a picture turned by 90 degrees
  float rotated_confidence = 0;
  float activity = 0;               // mean |frame difference| inside the content (gray levels)
  std::vector<FrameLayout> frames;  // one per input frame
};

// Throws std::invalid_argument naming the bad option and its allowed range.
void check_layout_options(const LayoutOptions& options);

// Analyse one video's sampled frames (time order), C-contiguous uint8 of shape (N, H, W)
// (luma) or (N, 3, H, W) (planar RGB), N >= 1, H, W >= 8. Throws std::invalid_argument on
// other shapes or bad options.
VideoLayout analyze_layout(const uint8_t* frames, const std::vector<int64_t>& shape, const LayoutOptions& options);

}  // namespace vcd
