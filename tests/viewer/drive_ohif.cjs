// Drives the OHIF viewer in Debian's Chromium (playwright-core, no browser download) for
// tests/viewer/test_ohif_viewer.py. Usage: node drive_ohif.cjs JOB.json
//
// JOB: {base_url, study_uid, seg_description, sr_description, out_dir, timeout_ms,
//       lesions: [{name, centre_mm: [x, y, z] (DICOM LPS), radius_mm}]}
// Writes into out_dir: PNG screenshots and result.json, the geometry the Python test needs to
// compare the screenshots with the phantom's truth. It judges nothing itself.
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.HEPATICA_CHROMIUM || '/usr/bin/chromium';
// Loopback only: without the background-networking flags Chromium keeps trying Google's hosts.
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function main() {
  const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const out = job.out_dir;
  const timeout = job.timeout_ms || 60000;
  const result = { steps: [], console_errors: [], lesions: [] };
  const save = () => fs.writeFileSync(path.join(out, 'result.json'), JSON.stringify(result, null, 1));
  const t0 = Date.now();
  const step = (name) => { result.steps.push({ name, s: (Date.now() - t0) / 1000 }); save(); };

  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.setDefaultTimeout(timeout);
    page.on('console', (m) => { if (m.type() === 'error') result.console_errors.push(m.text().slice(0, 400)); });
    page.on('pageerror', (e) => result.console_errors.push(`pageerror: ${e.message.slice(0, 400)}`));

    await page.goto(`${job.base_url}/viewer?StudyInstanceUIDs=${job.study_uid}`);
    // the first-visit tour sits over the viewport
    await page.getByText('Skip all').click({ timeout: 20000 }).catch(() => undefined);
    const vpId = await waitForImage(page, timeout);
    step('study open');
    await page.screenshot({ path: path.join(out, '01-study.png') });

    // Load the SEG the way a reader does: double-click its thumbnail, accept hydration.
    await page.getByText(job.seg_description, { exact: false }).first().dblclick();
    await page.getByRole('button', { name: 'Yes' }).click();
    await page.waitForFunction((id) => {
      const reps = window.services.segmentationService.getSegmentationRepresentations(id);
      return reps.length > 0 && Object.keys(reps[0].segments || {}).length > 0;
    }, vpId);
    const currentVp = await waitForImage(page, timeout);
    step('segmentation hydrated');
    result.segmentation = await page.evaluate((id) => {
      const rep = window.services.segmentationService.getSegmentationRepresentations(id)[0];
      const seg = window.services.segmentationService.getSegmentation(rep.segmentationId);
      const segments = Object.values(seg.segments).filter(Boolean).map((s) => ({
        index: s.segmentIndex, label: s.label, color: rep.segments[s.segmentIndex]?.color }));
      const vp = window.services.cornerstoneViewportService.getCornerstoneViewport(id);
      const shown = window.services.displaySetService.getActiveDisplaySets()
        .find((d) => vp.getImageIds().some((i) => d.SeriesInstanceUID && i.includes(d.SeriesInstanceUID)));
      return { id: rep.segmentationId, segments, viewport_type: vp.type,
        series_instance_uid: shown ? shown.SeriesInstanceUID : null };
    }, currentVp);

    // Each truth lesion: move the viewport (cornerstone's own geometry, not the SEG) to the
    // plane through the truth centroid, screenshot the viewport with the tumour segments
    // shown and hidden (liver hidden in both), and project the centroid to screenshot pixels.
    for (const [n, lesion] of job.lesions.entries()) {
      const geom = await page.evaluate(async ({ id, lesion }) => {
        const cs = window.cornerstone;
        const vp = window.services.cornerstoneViewportService.getCornerstoneViewport(id);
        const ids = vp.getImageIds();
        let best = 0; let bestD = Infinity;
        ids.forEach((imageId, i) => {
          const plane = cs.metaData.get('imagePlaneModule', imageId);
          const d = Math.abs(plane.imagePositionPatient[2] - lesion.centre_mm[2]);
          if (d < bestD) { bestD = d; best = i; }
        });
        await vp.setImageIdIndex(best);
        vp.render();
        const c = vp.worldToCanvas(lesion.centre_mm);
        const e = vp.worldToCanvas([lesion.centre_mm[0] + lesion.radius_mm, lesion.centre_mm[1], lesion.centre_mm[2]]);
        const rect = vp.canvas.getBoundingClientRect();
        // the displayed image's own extent (its corner pixels' centres), in page pixels
        const p = cs.metaData.get('imagePlaneModule', ids[best]);
        const corner = (r, c) => {
          const w = [0, 1, 2].map((k) => p.imagePositionPatient[k]
            + c * p.columnPixelSpacing * p.rowCosines[k] + r * p.rowPixelSpacing * p.columnCosines[k]);
          const xy = vp.worldToCanvas(w);
          return [rect.left + xy[0], rect.top + xy[1]];
        };
        const corners = [corner(0, 0), corner(0, p.columns - 1), corner(p.rows - 1, 0), corner(p.rows - 1, p.columns - 1)];
        const xs = corners.map((q) => q[0]); const ys = corners.map((q) => q[1]);
        return { image_index: best, slice_distance_mm: bestD, image_id: ids[best],
          canvas_rect: [rect.left, rect.top, rect.width, rect.height],
          image_rect: [Math.min(...xs), Math.min(...ys), Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys)],
          centre_px: [rect.left + c[0], rect.top + c[1]],
          radius_px: Math.hypot(e[0] - c[0], e[1] - c[1]) };
      }, { id: currentVp, lesion });
      const shots = {};
      for (const [mode, show] of [['overlay', true], ['plain', false]]) {
        await page.evaluate(async ({ id, segId, show }) => {
          const s = window.services.segmentationService;
          const seg = s.getSegmentation(segId);
          for (const segment of Object.values(seg.segments).filter(Boolean)) {
            const tumour = segment.segmentIndex !== 1; // segment 1 is the liver
            s.setSegmentVisibility(id, segId, segment.segmentIndex, show && tumour);
          }
          window.services.cornerstoneViewportService.getCornerstoneViewport(id).render();
        }, { id: currentVp, segId: result.segmentation.id, show });
        await page.waitForTimeout(800);
        const file = `02-lesion${n + 1}-${mode}.png`;
        await page.screenshot({ path: path.join(out, file) });
        shots[mode] = file;
      }
      result.lesions.push({ name: lesion.name, ...geom, shots });
      step(`lesion ${n + 1}`);
    }
    // One screenshot as a reader sees it: every segment on, at the first lesion.
    await page.evaluate(({ id, segId }) => {
      const s = window.services.segmentationService;
      for (const segment of Object.values(s.getSegmentation(segId).segments).filter(Boolean)) {
        s.setSegmentVisibility(id, segId, segment.segmentIndex, true);
      }
      window.services.cornerstoneViewportService.getCornerstoneViewport(id).render();
    }, { id: currentVp, segId: result.segmentation.id });
    await page.waitForTimeout(800);
    await page.screenshot({ path: path.join(out, '03-seg-all-segments.png') });

    // The SR: double-click its thumbnail, as a reader does. OHIF's SR handler parses the
    // TID 1500 measurement groups into its display set (one per tracking UID, merging its
    // TID 1411 and TID 1410 groups) and draws them on the referenced slice; the Python test
    // compares them with the SR in Orthanc.
    await page.getByText(job.sr_description, { exact: false }).first().dblclick();
    await page.waitForFunction((desc) => window.services.displaySetService.getActiveDisplaySets()
      .some((d) => d.Modality === 'SR' && d.SeriesDescription === desc && d.isLoaded), job.sr_description);
    await page.waitForTimeout(2000);
    step('sr opened');
    await page.screenshot({ path: path.join(out, '04-sr-opened.png') });
    result.sr_display_set = await page.evaluate((desc) => {
      const d = window.services.displaySetService.getActiveDisplaySets()
        .find((x) => x.Modality === 'SR' && x.SeriesDescription === desc);
      return { SOPClassHandlerId: d.SOPClassHandlerId, isImagingMeasurementReport: d.isImagingMeasurementReport,
        measurements: (d.measurements || []).map((m) => ({ TrackingIdentifier: m.TrackingIdentifier,
          labels: m.labels, coords: (m.coords || []).length })) };
    }, job.sr_description);
    result.sr_page_text = await page.evaluate(() => document.body.innerText);
    // The SR's content as OHIF's DICOM Tag Browser lists it, filtered to the lesion groups.
    await page.keyboard.press('Escape');
    const thumb = page.locator('[data-cy="study-browser-thumbnail-no-image"]', { hasText: job.sr_description });
    await thumb.hover();
    await thumb.locator('button[aria-haspopup="menu"]').click();
    await page.getByRole('menuitem', { name: /Tag Browser/ }).click();
    const dialog = page.getByRole('dialog');
    await dialog.getByPlaceholder('Search metadata').fill('Lesion');
    await page.waitForTimeout(1000);
    await page.screenshot({ path: path.join(out, '05-sr-tag-browser.png') });
    result.tag_browser_text = await dialog.innerText();
    await page.keyboard.press('Escape');
    await page.waitForTimeout(500);

    // What the SR viewport draws and lists: every group placed on its image (the labels are
    // the SR's values), and the measurement panel, which lists only measurements OHIF could
    // turn into its own tools ("rehydrate"; OHIF 3.13.2 has no generic adapter for a
    // two-point POLYLINE or a polygon, so Hepatica's SR is drawn but not rehydratable).
    result.sr_viewport_text = await page.locator('[data-cy="viewport-pane"]').first().innerText();
    result.sr_rehydratable = await page.evaluate((desc) => window.services.displaySetService
      .getActiveDisplaySets().find((x) => x.Modality === 'SR' && x.SeriesDescription === desc)
      .isRehydratable, job.sr_description);
    await page.locator('[data-cy="side-panel-header-right"]').first().click();
    await page.locator('[data-cy="trackedMeasurements-btn"]').first().click();
    await page.waitForTimeout(1000);
    await page.screenshot({ path: path.join(out, '06-sr-measurement-panel.png') });
    result.measurement_panel_text = await page.locator('[data-cy="trackedMeasurements-panel"]')
      .first().innerText();
    result.ok = true;
  } catch (err) {
    result.error = String(err && err.stack || err);
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages.length) await pages[0].screenshot({ path: path.join(out, '99-failure.png') }).catch(() => undefined);
  } finally {
    save();
    await browser.close();
  }
}

// Waits until the active viewport shows a decoded image; returns the viewport's id.
async function waitForImage(page, timeout) {
  const handle = await page.waitForFunction(() => {
    const s = window.services;
    if (!s || !s.viewportGridService) return null;
    const id = s.viewportGridService.getActiveViewportId();
    const vp = id && s.cornerstoneViewportService.getCornerstoneViewport(id);
    if (!vp || typeof vp.getCurrentImageId !== 'function' || !vp.getCurrentImageId()) return null;
    const image = vp.csImage || (vp.getImageData && vp.getImageData());
    return image ? id : null;
  }, null, { timeout, polling: 250 });
  return handle.jsonValue();
}

main().catch((err) => { console.error(err); process.exit(1); });
