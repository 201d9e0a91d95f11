// Carousel's web page: every VM's console and the contention charts, fed by deltas over one
// WebSocket (tools/carousel/src/web). The same charts watch a run (`carousel run --web`, mode
// "live"), scrub a finished trace (`carousel view`, mode "view") and draw the report page
// (`carousel report --html`, mode "report": the items are inlined in the page, in the element
// #carousel-items, and there are no consoles or controls). No library, no network but its own
// socket.
//
// The wire: each message is a JSON array of items; the first item of the first message is the
// setup object ({mode, vms, legend}); every other item is an array whose first element says
// what it is (see carousel-trace's render/web.rs). Times are TSC cycles since the origin.
// Guest strings arrive escaped and go into the page as text (textContent), never as markup.
'use strict';
(function () {
  const errors = document.getElementById('page-errors');
  function pageError(text) {
    const item = document.createElement('li');
    item.textContent = text;
    errors.appendChild(item);
    errors.dataset.count = String(errors.children.length);
  }
  window.addEventListener('error', (event) => pageError(String(event.message)));
  window.addEventListener('unhandledrejection', (event) => pageError(String(event.reason)));

  const SVG = 'http://www.w3.org/2000/svg';
  const token = new URLSearchParams(location.search).get('t') || '';
  const $ = (id) => document.getElementById(id);
  // The parts a report page leaves out (consoles, controls, the live header) are looked up
  // through this: a stand-in nobody sees when the page has no such element.
  const part = (id) => $(id) || document.createElement('div');

  function make(tag, attributes, parent, svg) {
    const node = svg ? document.createElementNS(SVG, tag) : document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (key === 'text') node.textContent = value;
      // Through the CSSOM: the page's policy refuses style attributes.
      else if (key === 'style') node.style.cssText = String(value);
      else node.setAttribute(key, String(value));
    }
    if (parent) parent.appendChild(node);
    return node;
  }
  const svg = (tag, attributes, parent) => make(tag, attributes, parent, true);

  // What the page knows about the run.
  const run = {
    mode: '', vms: [], hz: 0, legend: null, start: null, now: 0, end: null,
    reasons: {}, done: false, lagMax: 0,
  };
  // A finished run (a trace or a report): every item is kept, and the slider scrubs them.
  const finished = () => run.mode !== 'live';
  const seconds = (t) => run.hz ? t / run.hz : t / 1e9;
  const label = (t) => {
    const s = seconds(t);
    return s >= 1 ? s.toFixed(2) + ' s' : (s * 1e3).toFixed(1) + ' ms';
  };
  const micros = (cycles) => run.hz ? cycles * 1e6 / run.hz : cycles / 1e3;
  const colour = (vm) => {
    const series = run.legend ? run.legend.series : [];
    return vm < series.length ? series[vm] : 'hsl(' + ((vm * 137.508) % 360).toFixed(0) + ',55%,48%)';
  };
  function legend(box, entries) {
    box.textContent = '';
    for (const [name, shade] of entries) {
      const entry = make('span', {}, box);
      make('i', { style: 'background:' + shade }, entry);
      entry.appendChild(document.createTextNode(name));
    }
  }

  // ---- Consoles -------------------------------------------------------------------------
  const LINES_KEPT = 2000;
  const panes = [];
  const consoleLines = []; // view mode: [vm, text, tsc] of every line
  function makePane(vm, name) {
    const hypervisor = vm === null;
    const pane = make('article', { class: 'pane' + (hypervisor ? ' hypervisor' : ''),
      'data-vm': hypervisor ? 'carousel' : vm, 'data-lines': 0 }, part('consoles'));
    const head = make('h2', {}, pane);
    make('span', { class: 'swatch', style: 'background:' + (hypervisor ? '#3e4c59' : colour(vm)) }, head);
    make('span', { class: 'name', text: hypervisor ? 'carousel (hypervisor and tool)' : name }, head);
    const state = make('span', { class: 'state', text: hypervisor ? '' : 'running' }, head);
    const log = make('div', { class: 'log', role: 'log' }, pane);
    let input = null;
    if (!hypervisor) {
      input = make('input', { type: 'text', placeholder: 'type a line for ' + name + ', Enter sends',
        'aria-label': 'input for ' + name, spellcheck: 'false', autocomplete: 'off' }, pane);
      input.addEventListener('keydown', (event) => {
        if (event.key !== 'Enter') return;
        send({ type: 'input', vm, text: input.value + '\n' });
        input.value = '';
      });
      head.addEventListener('click', () => {
        const big = !pane.classList.contains('big');
        for (const other of panes) if (other) other.node.classList.remove('big');
        pane.classList.toggle('big', big);
        log.scrollTop = log.scrollHeight;
      });
    }
    const entry = { node: pane, log, state, input, lines: 0, checks: [0, 0] };
    return entry;
  }
  function paneOf(vm) {
    return vm === null || vm === undefined ? panes[panes.length - 1] : panes[vm];
  }
  // Lines wait in a fragment until the next draw, which adds them at once: one layout a draw,
  // not one a line.
  function addLine(pane, text, klass) {
    if (!pane) return;
    if (!pane.pending) pane.pending = document.createDocumentFragment();
    make('div', klass ? { class: klass, text } : { text }, pane.pending);
    if (pane.pending.childElementCount > LINES_KEPT) pane.pending.firstElementChild.remove();
    if (!klass) pane.lines += 1;
  }
  function flushPanes() {
    for (const pane of panes) {
      if (!pane.pending) continue;
      const log = pane.log;
      const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.appendChild(pane.pending);
      pane.pending = null;
      let extra = log.childElementCount - LINES_KEPT;
      while (extra > 0) { log.firstElementChild.remove(); extra -= 1; }
      pane.node.dataset.lines = String(pane.lines);
      if (stick) log.scrollTop = log.scrollHeight;
    }
  }
  function clearPanes() {
    for (const pane of panes) {
      pane.log.textContent = '';
      pane.pending = null;
      pane.lines = 0;
      pane.node.dataset.lines = '0';
      pane.checks = [0, 0];
      if (pane.input) pane.state.textContent = 'running';
    }
  }
  function paneState(vm, text) {
    const pane = panes[vm];
    if (pane && pane.input) pane.state.textContent = text;
  }

  // ---- Charts ---------------------------------------------------------------------------
  // Each chart: reset() forgets everything, add(item) takes one item, flush() draws what is
  // new. Live, items only ever add; a view's scrub resets and adds the items up to the cursor.
  function figure(id) {
    const node = $(id);
    return { node, records: 0, count() { this.records += 1; } };
  }
  function setRecords(chart) {
    chart.node.dataset.records = String(chart.records);
    chart.node.dataset.at = String(run.now);
  }

  // CPU share per VM over time: one column per bucket of 100 ms of TSC time, drawn once the
  // bucket is over, the newest WINDOW of them on screen.
  const share = Object.assign(figure('share'), {
    svg: $('share').querySelector('svg'),
    column: 4, window: 250, buckets: new Map(), drawn: 0, reach: null, markers: [], marked: -1, slices: [], running: [],
    columns: null, marks: null,
    reset() {
      this.records = 0; this.buckets.clear(); this.drawn = 0; this.reach = null;
      this.slices = run.vms.map(() => 0);
      this.running = run.vms.map(() => 0);
      this.markers = []; this.marked = -1;
      this.svg.textContent = '';
      this.columns = svg('g', {}, this.svg);
      this.marks = svg('g', { class: 'markers' }, this.svg);
    },
    // A setting or control at `tsc` (null: the latest time): a line across the columns.
    marker(tsc, text) { this.markers.push([tsc === null ? run.now : tsc, text]); },
    length() { return run.hz ? Math.round(run.hz / 10) : 1e8; },
    add(vm, start, end) {
      this.count();
      if (vm < this.slices.length) { this.slices[vm] += 1; this.running[vm] += Math.max(0, end - start); }
      if (run.start === null) return;
      const length = this.length();
      const from = Math.max(0, Math.floor((start - run.start) / length));
      const to = Math.floor((end - 1 - run.start) / length);
      for (let k = from; k <= to; k += 1) {
        const low = run.start + k * length;
        const overlap = Math.min(end, low + length) - Math.max(start, low);
        if (overlap <= 0) continue;
        let shares = this.buckets.get(k);
        if (!shares) { shares = new Float64Array(run.vms.length); this.buckets.set(k, shares); }
        if (vm < shares.length) shares[vm] += overlap / length;
      }
      this.reach = Math.max(this.reach === null ? end : this.reach, end);
    },
    flush() {
      const length = this.length();
      const node = this.node;
      node.dataset.bucketCycles = String(length);
      node.dataset.slices = JSON.stringify(this.slices);
      node.dataset.running = JSON.stringify(this.running);
      if (run.start !== null && this.reach !== null) {
        // Live, a column is drawn once its bucket is over; over a finished run the last one
        // up to the cursor is drawn too, as far as it got.
        const reached = (Math.min(this.reach, run.now) - run.start) / length;
        const complete = Math.max(0, finished() ? Math.ceil(reached) : Math.floor(reached));
        for (let k = this.drawn; k < complete; k += 1) {
          const shares = this.buckets.get(k) || new Float64Array(run.vms.length);
          const group = svg('g', { 'data-k': k }, this.columns);
          // The last column of a finished run may cover less than a bucket: its shares are
          // of the time it covers.
          const covered = Math.min(length, Math.min(this.reach, run.now) - (run.start + k * length));
          const scale = covered > 0 ? length / covered : 1;
          let y = 100;
          shares.forEach((value, vm) => {
            if (value <= 0) return;
            const height = Math.min(100, value * scale * 100);
            y -= height;
            svg('rect', { x: k * this.column, y: y.toFixed(2), width: this.column, height: height.toFixed(2),
              fill: colour(vm) }, group);
          });
          node.dataset.last = JSON.stringify(Array.from(shares, (v) => Math.round(v * 1e4) / 1e4));
        }
        if (complete > this.drawn) this.drawn = complete;
        node.dataset.complete = String(this.drawn);
        // A finished run's chart spans the whole run (the cursor fills it); a live one the
        // newest WINDOW columns.
        const whole = finished() && run.end !== null && run.start !== null
          ? Math.ceil((run.end - run.start) / length) : 0;
        const width = finished() ? Math.max(1, whole, this.drawn) : this.window;
        const first = Math.max(0, this.drawn - width);
        // Columns that scrolled out go, and their sums.
        while (this.columns.firstElementChild && Number(this.columns.firstElementChild.dataset.k) < first) {
          this.columns.firstElementChild.remove();
        }
        if (this.marked !== this.markers.length) {
          this.marked = this.markers.length;
          this.marks.textContent = '';
          for (const [tsc, text] of this.markers) {
            const x = ((tsc - run.start) / length * this.column).toFixed(2);
            const line = svg('line', { x1: x, x2: x, y1: 0, y2: 100, class: 'marker',
              'vector-effect': 'non-scaling-stroke' }, this.marks);
            svg('title', { text }, line);
          }
        }
        for (const k of this.buckets.keys()) if (k < first) this.buckets.delete(k);
        this.svg.setAttribute('viewBox', (first * this.column) + ' 0 ' + (width * this.column) + ' 100');
        node.querySelector('.axis-note').textContent = 'one column per ' + label(length) +
          '; ' + label(first * length) + ' to ' + label(this.drawn * length) + ' after the first event';
      }
      setRecords(this);
    },
  });

  // Who ran when: one row per VM; running slices in the VM's colour, runnable spans pale,
  // blocked grey. Neighbouring bars closer than a pixel merge; bars left of the window go.
  const GANTT_ROW = 14;
  const gantt = Object.assign(figure('gantt'), {
    svg: $('gantt').querySelector('svg'), rows: [], markers: null,
    reset() {
      this.records = 0;
      this.svg.textContent = '';
      this.rows = [];
      this.markers = svg('g', { class: 'markers' }, this.svg);
      this.svg.setAttribute('height', String(GANTT_ROW * Math.max(1, run.vms.length) + 4));
      const labels = this.node.querySelector('.gantt-labels');
      labels.textContent = '';
      run.vms.forEach((name, vm) => {
        const row = svg('g', { 'data-vm': vm }, this.svg);
        make('div', { text: name, style: 'height:' + GANTT_ROW + 'px' }, labels);
        // Kinds: 0 running, 1 runnable, 2 blocked, 3 blocked on the disk; each its own group,
        // in time order.
        const kinds = [0, 1, 2, 3].map((kind) => svg('g', { 'data-kind': kind }, row));
        this.rows.push({ kinds, last: [null, null, null, null] });
      });
    },
    // The window on screen, in cycles: the choice of #gantt-window (seconds; 0, the whole run,
    // is 10 s while a run goes). Bars closer than a thousandth of it merge.
    window() {
      const hz = run.hz || 1e9;
      const chosen = Number(part('gantt-window').value) || 0;
      if (chosen > 0) return chosen * hz;
      if (finished() && run.end !== null) return Math.max(1, run.end - (run.start || 0));
      return hz * 10;
    },
    bar(vm, kind, start, end) {
      this.count();
      const row = this.rows[vm];
      if (!row) return;
      const ms = 1e3 / (run.hz || 1e9);
      const x = start * ms;
      const width = Math.max(0, (end - start) * ms);
      const gap = this.window() * ms / 1000;
      const last = row.last[kind];
      if (last && x - last.end <= gap) {
        last.end = x + width;
        last.node.setAttribute('width', (last.end - last.x).toFixed(3));
        return;
      }
      const attributes = { x: x.toFixed(3), y: vm * GANTT_ROW + 2, width: width.toFixed(3), height: GANTT_ROW - 4 };
      if (kind === 0) attributes.fill = colour(vm);
      else if (kind === 1) { attributes.fill = colour(vm); attributes['fill-opacity'] = 0.22; }
      else if (kind === 2) { attributes.fill = run.legend ? run.legend.blocked : '#9ca3af'; attributes['fill-opacity'] = 0.55; }
      else { attributes.fill = run.legend ? run.legend.blocked_disk : '#b45309'; attributes['fill-opacity'] = 0.75; }
      const node = svg('rect', attributes, row.kinds[kind]);
      row.last[kind] = { node, x, end: x + width };
    },
    marker(tsc, text) {
      if (!this.markers) return;
      const x = (tsc === null ? run.now : tsc) * 1e3 / (run.hz || 1e9);
      const line = svg('line', { x1: x, x2: x, y1: 0, y2: GANTT_ROW * run.vms.length, class: 'marker',
        'vector-effect': 'non-scaling-stroke' }, this.markers);
      svg('title', { text }, line);
    },
    flush() {
      const ms = 1e3 / (run.hz || 1e9);
      const to = run.now * ms;
      const from = Math.max(run.start === null ? 0 : run.start * ms, to - this.window() * ms);
      for (const row of this.rows) {
        for (const group of row.kinds) {
          while (group.firstElementChild &&
            Number(group.firstElementChild.getAttribute('x')) + Number(group.firstElementChild.getAttribute('width')) < from) {
            group.firstElementChild.remove();
          }
        }
      }
      const width = Math.max(to - from, 1e-3);
      this.svg.setAttribute('viewBox', from.toFixed(3) + ' 0 ' + width.toFixed(3) + ' ' + (GANTT_ROW * Math.max(1, run.vms.length) + 4));
      this.svg.setAttribute('preserveAspectRatio', 'none');
      this.node.querySelector('.axis-note').textContent = label(from / ms - (run.start || 0)) + ' to ' +
        label(to / ms - (run.start || 0)) + ' after the first event';
      setRecords(this);
    },
  });

  // Root time by exit reason: a donut for all VMs and one per VM, redrawn as the sums grow.
  const donuts = Object.assign(figure('donuts'), {
    sums: [], total: new Map(), exits: 0, cycles: 0, changed: false, boxes: [],
    reset() {
      this.records = 0; this.sums = run.vms.map(() => new Map()); this.total = new Map();
      this.exits = 0; this.cycles = 0; this.changed = true;
      const row = this.node.querySelector('.donut-row');
      row.textContent = '';
      this.boxes = [null].concat(run.vms.map((_, vm) => vm)).map((vm) => {
        const box = make('div', { class: 'donut-box' }, row);
        const chart = svg('svg', { class: 'donut', viewBox: '-50 -50 100 100' }, box);
        make('div', { text: vm === null ? 'all VMs' : run.vms[vm] }, box);
        const figureText = make('div', { class: 'donut-total' }, box);
        return { vm, chart, figureText };
      });
    },
    add(vm, exits) {
      this.count();
      for (const [reason, count, cycles] of exits) {
        this.exits += count; this.cycles += cycles;
        const sums = this.sums[vm];
        if (sums) sums.set(reason, (sums.get(reason) || 0) + cycles);
        this.total.set(reason, (this.total.get(reason) || 0) + cycles);
      }
      this.changed = true;
    },
    order() {
      return Array.from(this.total.entries()).sort((a, b) => b[1] - a[1]).map(([reason]) => reason);
    },
    shade(rank) {
      const reasons = run.legend ? run.legend.reasons : [];
      return rank < reasons.length ? reasons[rank] : (run.legend ? run.legend.other_exits : '#bab0ac');
    },
    flush() {
      this.node.dataset.exits = String(this.exits);
      this.node.dataset.cycles = String(this.cycles);
      setRecords(this);
      if (!this.changed) return;
      this.changed = false;
      const order = this.order();
      const rank = new Map(order.map((reason, index) => [reason, Math.min(index, 8)]));
      for (const box of this.boxes) {
        const sums = box.vm === null ? this.total : this.sums[box.vm];
        box.chart.textContent = '';
        let all = 0;
        for (const value of sums.values()) all += value;
        box.figureText.textContent = all ? Math.round(micros(all)).toLocaleString('en') + ' µs' : 'no exits yet';
        let angle = 0;
        for (const reason of order) {
          const value = sums.get(reason) || 0;
          if (!value) continue;
          const sweep = value / all * Math.PI * 2;
          const path = arc(angle, Math.min(sweep, Math.PI * 2 - 1e-6));
          const slice = svg('path', { d: path, fill: this.shade(rank.get(reason)) }, box.chart);
          svg('title', { text: (run.reasons[reason] || 'reason ' + reason) + ': ' + Math.round(micros(value)) + ' µs' }, slice);
          angle += sweep;
        }
      }
      legend(this.node.querySelector('.legend'), order.slice(0, 9).map((reason, index) =>
        [index < 8 ? (run.reasons[reason] || String(reason)) : 'other exits', this.shade(index)]));
    },
  });
  function arc(from, sweep) {
    const [outer, inner] = [48, 28];
    const point = (r, a) => (r * Math.sin(a)).toFixed(2) + ' ' + (-r * Math.cos(a)).toFixed(2);
    const large = sweep > Math.PI ? 1 : 0;
    return 'M' + point(outer, from) + ' A' + outer + ' ' + outer + ' 0 ' + large + ' 1 ' + point(outer, from + sweep) +
      ' L' + point(inner, from + sweep) + ' A' + inner + ' ' + inner + ' 0 ' + large + ' 0 ' + point(inner, from) + ' Z';
  }

  // A grid of squares on a canvas, one per cell; `paint(cell, colour)` draws one.
  const SQUARE = 5;
  function gridBox(parent, title, cells) {
    const box = make('div', { class: 'grid-box' }, parent);
    const caption = make('div', { text: title }, box);
    const columns = 64;
    const rows = Math.max(1, Math.ceil(cells / columns));
    const canvas = make('canvas', { width: columns * SQUARE, height: rows * SQUARE }, box);
    const context = canvas.getContext('2d');
    const note = make('div', {}, box);
    return {
      box, caption, note, cells,
      paint(cell, shade) {
        context.fillStyle = shade;
        context.fillRect((cell % columns) * SQUARE, Math.floor(cell / columns) * SQUARE, SQUARE - 1, SQUARE - 1);
      },
      remove() { box.remove(); },
    };
  }

  // Each VM's memory: the cells of its latest map, only the changed ones painted.
  const memory = Object.assign(figure('memory'), {
    grids: [],
    reset() {
      this.records = 0; this.grids = [];
      this.node.querySelector('.grids').textContent = '';
      if (run.legend) legend(this.node.querySelector('.legend'), run.legend.pages);
    },
    add(vm, tsc, pagesPerCell, cells, changed) {
      this.count();
      let grid = this.grids[vm];
      if (!grid || grid.cells !== cells) {
        if (grid) grid.remove();
        grid = gridBox(this.node.querySelector('.grids'), run.vms[vm] || 'vm' + vm, cells);
        grid.states = new Uint8Array(cells);
        for (let cell = 0; cell < cells; cell += 1) grid.paint(cell, this.shade(0));
        this.grids[vm] = grid;
      }
      for (const [cell, state] of changed) {
        if (cell >= cells) continue;
        grid.states[cell] = state;
        grid.paint(cell, this.shade(state));
      }
      grid.box.dataset.tsc = String(tsc);
      grid.note.textContent = pagesPerCell + ' pages a square, at ' + label(tsc - (run.start || 0));
    },
    shade(state) {
      const pages = run.legend ? run.legend.pages : [];
      return state < pages.length ? pages[state][1] : '#000';
    },
    flush() { setRecords(this); },
  });

  // Each VM's disk: blocks read and written (the grid's scale doubles as the disk grows), and
  // its transfers.
  const disk = Object.assign(figure('disk'), {
    vms: [], sectors: 0,
    reset() {
      this.records = 0; this.vms = []; this.sectors = 0;
      this.node.querySelector('.grids').textContent = '';
      if (run.legend) legend(this.node.querySelector('.legend'), run.legend.disk);
    },
    add(vm, tsc, lba, sectors, write) {
      this.count();
      this.sectors += sectors;
      let state = this.vms[vm];
      if (!state) {
        state = { blocks: new Map(), span: 64, grid: null, reads: 0, writes: 0, read: 0, written: 0 };
        this.vms[vm] = state;
      }
      if (write) { state.writes += 1; state.written += sectors; } else { state.reads += 1; state.read += sectors; }
      const bit = write ? 2 : 1;
      for (let block = lba >> 3; block <= (lba + Math.max(1, sectors) - 1) >> 3 && state.blocks.size < 1 << 20; block += 1) {
        state.blocks.set(block, (state.blocks.get(block) || 0) | bit);
      }
      let span = state.span;
      while (span < lba + sectors) span *= 2;
      if (span !== state.span || !state.grid) {
        state.span = span;
        if (state.grid) state.grid.remove();
        state.grid = gridBox(this.node.querySelector('.grids'), run.vms[vm] || 'vm' + vm, 512);
        state.cells = new Uint8Array(512);
        for (let cell = 0; cell < 512; cell += 1) state.grid.paint(cell, this.shade(0));
        for (const [block, bits] of state.blocks) this.mark(state, block, bits);
      } else {
        for (let block = lba >> 3; block <= (lba + Math.max(1, sectors) - 1) >> 3; block += 1) this.mark(state, block, bit);
      }
      state.grid.note.textContent = state.reads + ' reads (' + state.read + ' sectors), ' + state.writes +
        ' writes (' + state.written + ' sectors); ' + (state.span / 512) + ' sectors a square';
    },
    mark(state, block, bits) {
      const cell = Math.min(511, Math.floor(block * 8 / (state.span / 512)));
      state.cells[cell] |= bits;
      state.grid.paint(cell, this.shade(state.cells[cell]));
    },
    shade(bits) {
      const states = run.legend ? run.legend.disk : [];
      return bits < states.length ? states[bits][1] : '#000';
    },
    flush() { this.node.dataset.sectors = String(this.sectors); setRecords(this); },
  });

  // Timer lag per VM (the TimerLag records at the end of the run): mean and largest.
  const lag = Object.assign(figure('lag-chart'), {
    svg: $('lag-chart').querySelector('svg'), vms: [],
    reset() { this.records = 0; this.vms = []; this.svg.textContent = ''; },
    add(vm, ticks, coalesced, total, max) {
      this.count();
      this.vms[vm] = { ticks, coalesced, mean: ticks ? total / ticks : 0, max };
    },
    flush() {
      setRecords(this);
      this.svg.textContent = '';
      const rows = run.vms.length || 1;
      const height = Math.max(160, rows * 14 + 10);
      this.svg.setAttribute('viewBox', '0 0 400 ' + height);
      this.svg.style.height = height + 'px';
      let top = 0;
      for (const entry of this.vms) if (entry) top = Math.max(top, entry.max);
      if (!top) {
        svg('text', { x: 4, y: 14, text: 'no timer figures yet (they come at the end of the run)' }, this.svg);
        return;
      }
      this.vms.forEach((entry, vm) => {
        if (!entry) return;
        const y = vm * 14 + 4;
        svg('text', { x: 0, y: y + 9, text: run.vms[vm] || 'vm' + vm }, this.svg);
        svg('rect', { x: 90, y, height: 10, width: (entry.max / top * 220).toFixed(1), fill: colour(vm), 'fill-opacity': 0.3 }, this.svg);
        svg('rect', { x: 90, y, height: 10, width: (entry.mean / top * 220).toFixed(1), fill: colour(vm) }, this.svg);
        svg('text', { x: 316, y: y + 9, text: Math.round(micros(entry.mean)) + ' / ' + Math.round(micros(entry.max)) + ' µs' }, this.svg);
      });
    },
  });

  // Dot charts over TSC time (wake latency, disk waits): a dot at (tsc, height) in VM vm's
  // colour, the newest DOTS_KEPT kept, and a view from 0 to now, as tall as the tallest dot.
  const DOTS_KEPT = 3000;
  function timeDot(group, vm, tsc, height) {
    const x = seconds(tsc).toFixed(5);
    svg('line', { x1: x, x2: x, y1: (-height).toFixed(2), y2: (-height).toFixed(2), stroke: colour(vm), 'stroke-width': 4,
      'stroke-linecap': 'round', 'vector-effect': 'non-scaling-stroke' }, group);
    while (group.childElementCount > DOTS_KEPT) group.firstElementChild.remove();
  }
  function fitTime(chart, top) {
    const to = Math.max(seconds(run.now), 1e-6);
    chart.setAttribute('viewBox', '0 ' + (-top * 1.05).toFixed(2) + ' ' + to.toFixed(5) + ' ' + (top * 1.05).toFixed(2));
    chart.setAttribute('preserveAspectRatio', 'none');
  }

  // Wake latency: one dot per wake (when it woke, how long until it ran), the newest kept.
  const wakes = Object.assign(figure('wakes'), {
    svg: $('wakes').querySelector('svg'), top: 1, dots: null,
    reset() {
      this.records = 0; this.top = 1; this.svg.textContent = '';
      this.dots = svg('g', {}, this.svg);
    },
    add(vm, tsc, latency) {
      this.count();
      const us = micros(latency);
      this.top = Math.max(this.top, us);
      timeDot(this.dots, vm, tsc, us);
    },
    flush() {
      setRecords(this);
      fitTime(this.svg, this.top);
      this.node.querySelector('.axis-note').textContent = this.records + ' wakes; up to ' +
        Math.round(this.top).toLocaleString('en') + ' µs; 0 to ' + label(run.now);
    },
  });

  // The timed shared disk: a dot per request at its completion, as high as its wait for the
  // device, and the queue's average length (waiting or in service) per bucket of 10 ms of TSC
  // time, from each request's arrival to its completion. Requests arrive in completion order,
  // so a bucket may still grow after it was drawn: the line is redrawn, the dots only appended.
  const DISK_BUCKETS_KEPT = 2000;
  const diskQueue = Object.assign(figure('disk-queue'), {
    svg: $('disk-queue').querySelector('svg'), top: 1, dots: null, line: null, busy: new Map(),
    newest: 0, vms: [],
    bucket() { return Math.max(1, Math.round((run.hz || 1e9) / 100)); },
    reset() {
      this.records = 0; this.top = 1; this.busy.clear(); this.newest = 0; this.vms = [];
      this.svg.textContent = '';
      this.dots = svg('g', {}, this.svg);
      this.line = svg('polyline', { fill: 'none', stroke: '#444', 'stroke-width': 1.5,
        'vector-effect': 'non-scaling-stroke' }, this.svg);
      this.node.querySelector('.per-vm').textContent = '';
    },
    add(vm, tsc, sectors, wait, service) {
      this.count();
      const us = micros(wait);
      this.top = Math.max(this.top, us);
      timeDot(this.dots, vm, tsc, us);
      const width = this.bucket();
      // At most the buckets kept, whatever a (corrupt) trace says the request waited.
      const arrival = Math.max(tsc - wait - service, tsc - width * DISK_BUCKETS_KEPT);
      for (let from = Math.floor(arrival / width) * width; from < tsc; from += width) {
        const overlap = Math.min(tsc, from + width) - Math.max(arrival, from);
        if (overlap > 0) this.busy.set(from, (this.busy.get(from) || 0) + overlap);
        this.newest = Math.max(this.newest, from);
      }
      // The newest buckets are kept: requests complete out of arrival order, so the oldest
      // bucket need not be the first one made.
      if (this.busy.size > DISK_BUCKETS_KEPT) {
        const floor = this.newest - width * DISK_BUCKETS_KEPT;
        for (const from of this.busy.keys()) if (from <= floor) this.busy.delete(from);
      }
      const entry = this.vms[vm] || (this.vms[vm] = { requests: 0, sectors: 0, waitMax: 0, waitSum: 0 });
      entry.requests += 1; entry.sectors += sectors; entry.waitSum += wait;
      entry.waitMax = Math.max(entry.waitMax, wait);
    },
    flush() {
      setRecords(this);
      const width = this.bucket();
      let queueTop = 0;
      for (const cycles of this.busy.values()) queueTop = Math.max(queueTop, cycles / width);
      this.node.dataset.queueMax = queueTop.toFixed(2);
      const scale = queueTop ? this.top / queueTop : 1;
      const points = [...this.busy.entries()].sort((a, b) => a[0] - b[0])
        .map(([from, cycles]) => seconds(from + width / 2).toFixed(5) + ',' + (-(cycles / width) * scale).toFixed(2));
      this.line.setAttribute('points', points.join(' '));
      fitTime(this.svg, this.top);
      this.node.querySelector('.axis-note').textContent = this.records
        ? this.records + ' requests; wait up to ' + Math.round(this.top).toLocaleString('en') +
          ' µs; queue up to ' + queueTop.toFixed(1) + ' (10 ms average); 0 to ' + label(run.now)
        : 'no timed disk requests (a lab gives the disk a service time with [run.disk])';
      const box = this.node.querySelector('.per-vm');
      box.textContent = '';
      this.vms.forEach((entry, vm) => {
        if (!entry) return;
        make('div', { text: (run.vms[vm] || 'vm' + vm) + ': ' + entry.requests + ' requests, ' + entry.sectors +
          ' sectors; wait mean ' + Math.round(micros(entry.waitSum / entry.requests)) + ' µs, max ' +
          Math.round(micros(entry.waitMax)) + ' µs', style: 'color:' + colour(vm) }, box);
      });
    },
  });

  // Dropped records (the hypervisor's count) and records lost on the way (gaps, bad frames).
  const dropped = Object.assign(figure('dropped'), {
    total: 0, lost: 0, skipped: 0,
    reset() { this.records = 0; this.total = 0; this.lost = 0; this.skipped = 0; },
    flush() {
      setRecords(this);
      this.node.dataset.dropped = String(this.total);
      this.node.querySelector('.figure').textContent = this.total + ' dropped by the hypervisor, ' +
        this.lost + ' lost on the way' + (this.skipped ? ', ' + this.skipped + ' deltas skipped by this page' : '');
    },
  });

  const charts = [share, gantt, donuts, memory, disk, diskQueue, lag, wakes, dropped];

  // ---- Items ----------------------------------------------------------------------------
  // The time an item is about, for the view's cursor (null: always shown).
  function itemTime(item) {
    switch (item[0]) {
      case 's': case 'r': return item[item[0] === 's' ? 2 : 3];
      case 'x': case 'm': case 'd': case 'D': case 'w': case 'q': case 'c': return item[2];
      case 'o': return item[3];
      case 'l': case 'e': case 'M': return item[1];
      case 't': return run.end;
      default: return null;
    }
  }
  const timed = []; // view mode: every chart and console item, in arrival order

  function setup(first) {
    run.mode = first.mode;
    run.vms = first.vms;
    run.legend = first.legend;
    document.body.dataset.mode = run.mode;
    part('mode').textContent = run.mode === 'view' ? 'trace' : run.mode;
    const columns = Math.min(4, Math.max(1, Math.ceil(Math.sqrt(run.vms.length))));
    part('consoles').style.setProperty('--columns', String(columns));
    part('consoles').style.setProperty('--rows', String(Math.max(1, Math.ceil(run.vms.length / columns))));
    if ($('consoles')) run.vms.forEach((name, vm) => panes.push(makePane(vm, name)));
    const knobVm = part('knob-vm');
    knobVm.replaceChildren(...run.vms.map((name, vm) => {
      const option = document.createElement('option');
      option.value = String(vm);
      option.textContent = name;
      return option;
    }));
    if ($('consoles')) panes.push(makePane(null, 'carousel'));
    if (finished()) {
      for (const pane of panes) if (pane.input) pane.input.disabled = true;
      part('end-run').hidden = true;
      part('knobs').hidden = true;
      part('knobs').disabled = true;
    }
    for (const chart of charts) chart.reset();
  }

  // Applies one item to the charts and consoles; `clip`, in a view, is the cursor.
  function apply(item, clip) {
    switch (item[0]) {
      case 's': {
        const end = clip === undefined ? item[3] : Math.min(item[3], clip);
        share.add(item[1], item[2], end);
        gantt.bar(item[1], 0, item[2], end);
        break;
      }
      case 'r': {
        const end = clip === undefined ? item[4] : Math.min(item[4], clip);
        // Blocked on the disk (item[5], 0 in BlockedOn's order) is a kind of its own.
        if (item[2] === 1) gantt.bar(item[1], 1, item[3], end);
        else if (item[2] === 2) gantt.bar(item[1], item[5] === 0 ? 3 : 2, item[3], end);
        else gantt.count();
        break;
      }
      case 'x': donuts.add(item[1], item[4]); break;
      case 'm': memory.add(item[1], item[2], item[3], item[4], item[5]); break;
      case 'd': disk.add(item[1], item[2], item[3], item[4], item[5] === 1); break;
      case 'D': diskQueue.add(item[1], item[2], item[3], item[5], item[6]); break;
      case 'w': wakes.add(item[1], item[2], item[3]); break;
      case 'l': dropped.count(); dropped.total = Math.max(dropped.total, item[2]); break;
      case 'g': dropped.count(); dropped.lost += item[1]; break;
      case 't': lag.add(item[1], item[2], item[3], item[4], item[5]); break;
      case 'q': paneState(item[1], 'stopped: ' + item[3]); break;
      case 'c': {
        const pane = panes[item[1]];
        if (pane && pane.input) {
          pane.checks[item[4] ? 0 : 1] += 1;
          if (!/^stopped/.test(pane.state.textContent)) {
            pane.state.textContent = pane.checks[0] + ' checks passed' + (pane.checks[1] ? ', ' + pane.checks[1] + ' FAILED' : '');
          }
        }
        break;
      }
      case 'e': run.ended = true; break;
      case 'o': addLine(paneOf(item[1]), item[2]); break;
      case 'M':
        gantt.marker(item[1], item[2]);
        share.marker(item[1], item[2]);
        addLine(paneOf(null), '[page] ' + item[2]);
        break;
      default: break;
    }
    const time = itemTime(item);
    if (time !== null && time !== undefined && item[0] !== 'o' && item[0] !== 'M') {
      run.now = Math.max(run.now, clip === undefined ? time : Math.min(time, clip));
    }
  }

  // Items that set the run up or say how it stands, whatever the cursor.
  function meta(item) {
    switch (item[0]) {
      case 'h': run.hz = item[2]; return true;
      case 'O': return true;
      case 'b': run.start = item[1]; return true;
      case 'n': run.reasons[item[1]] = item[2]; return true;
      case 'T': {
        if (run.mode === 'live') {
          const late = Math.max(0, Date.now() - item[1]);
          run.lagMax = Math.max(run.lagMax, late);
          part('lag').dataset.lastMs = String(late);
          part('lag').dataset.maxMs = String(run.lagMax);
          part('lag').textContent = 'page lag ' + late + ' ms (max ' + run.lagMax + ')';
        }
        return true;
      }
      case 'K': dropped.skipped += item[1]; notice('the page fell behind: ' + item[1] + ' chart deltas skipped'); return true;
      case 'k': addLine(paneOf(item[1]), '… ' + item[2] + ' lines skipped (the page fell behind) …', 'skip'); return true;
      case 'S': status(item[1], item[2]); return true;
      case 'R': notice(item[1]); return true;
      default: return false;
    }
  }

  function notice(text) { part('notice').textContent = text; }
  function status(text, done) {
    // "Done" means everything is on the page: the lines waiting for the next draw go first.
    if (done) draw();
    part('status').textContent = text;
    part('status').dataset.done = done ? 'yes' : 'no';
    if (done) {
      run.done = true;
      part('end-run').disabled = true;
      if (finished()) openScrub();
    }
  }

  let pending = null;
  function schedule() {
    if (pending === null) pending = setTimeout(() => { pending = null; draw(); }, 100);
  }
  function draw() {
    flushPanes();
    for (const chart of charts) chart.flush();
    document.body.dataset.at = String(run.now);
    document.body.dataset.rendered = 'yes';
  }

  function receive(items) {
    for (const item of items) {
      if (!Array.isArray(item)) { setup(item); continue; }
      if (meta(item)) continue;
      if (finished()) {
        timed.push(item);
        const time = itemTime(item);
        if (Number.isFinite(time)) run.end = Math.max(run.end || 0, time);
      } else {
        apply(item);
      }
    }
    if (run.mode === 'live') schedule();
  }

  // ---- A finished trace: the cursor -----------------------------------------------------
  function openScrub() {
    const slider = $('slider');
    $('scrub').hidden = false;
    const start = run.start || 0;
    slider.min = String(start);
    slider.max = String(Math.max(run.end || 0, start));
    slider.value = slider.max;
    slider.addEventListener('input', () => moveTo(Number(slider.value)));
    moveTo(Number(slider.max));
  }
  function moveTo(cursor) {
    run.now = cursor;
    for (const chart of charts) chart.reset();
    clearPanes();
    for (const item of timed) {
      const time = itemTime(item);
      const from = item[0] === 's' ? item[2] : item[0] === 'r' ? item[3] : time;
      if (item[0] === 'o' && (time === null || time === undefined)) { apply(item, cursor); continue; }
      if (from === null || from === undefined || from <= cursor) apply(item, cursor);
    }
    run.now = cursor;
    $('slider-time').textContent = label(cursor - (run.start || 0));
    $('slider-time').dataset.cycles = String(cursor);
    draw();
  }

  // ---- The socket -----------------------------------------------------------------------
  let socket = null;
  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
    else notice('not connected');
  }
  // Another Gantt window: a finished run redraws at the cursor (bars merge by the window); a
  // live one merges what comes from now on by it.
  part('gantt-window').addEventListener('change', () => {
    if (finished() && run.done) moveTo(Number($('slider').value));
    else schedule();
  });
  part('end-run').addEventListener('click', () => send({ type: 'end' }));
  part('knob-set').addEventListener('click', () => {
    for (const knob of ['quantum_us', 'weight', 'cap']) {
      const field = $('knob-' + knob);
      if (field.value !== '') {
        send({ type: 'set', knob, vm: knob === 'quantum_us' ? null : Number($('knob-vm').value), value: Number(field.value) });
        field.value = '';
      }
    }
  });
  function connect() {
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    socket = new WebSocket(scheme + location.host + '/ws?t=' + encodeURIComponent(token));
    socket.addEventListener('message', (event) => receive(JSON.parse(event.data)));
    socket.addEventListener('close', () => {
      if (!run.done) status('disconnected from carousel', false);
    });
  }
  const inlined = $('carousel-items');
  if (inlined) receive(JSON.parse(inlined.textContent));
  else connect();
})();
