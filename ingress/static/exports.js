// Downloads of the session's masks (COCO JSON, PNG zip, DAVIS, MP4), of every object or one.

import { $, report } from "./page.js";
import { api, state } from "./state.js";

/** A download of the export. Without a key the browser fetches the link itself and streams it
 * to disk; a key must go in a header, so the export is fetched and saved from memory. */
export async function exportAs(format) {
  const sessionId = state.session.session_id;
  const objId = $("export-object").value || null;
  const path = `sessions/${sessionId}/export`;
  const query = { format, obj_id: objId };
  const link = document.createElement("a");
  if (api.key) {
    report(`Exporting ${format}…`);
    link.href = URL.createObjectURL(await api.blob(path, { query }));
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  } else {
    link.href = api.url(path, query).href;
  }
  const suffix = { coco: ".json", png_zip: ".zip", davis: ".zip", mp4: ".mp4" }[format];
  link.download = `${sessionId}_${format}${suffix}`;
  document.body.append(link);
  link.click();
  link.remove();
  report(`Export ${format} started.`);
}
