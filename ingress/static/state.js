// What the page has open, shared by its modules, and its one API client.

import { Api } from "./api.js";
import { askKey } from "./page.js";

export const state = {
  session: null,
  frame: 0,
  activeObj: null, // null: the next prompt starts a new object
  objects: [],
  marks: new Map(), // frame -> prompt marks made on this page
  propagation: null, // {controller, total, done} while a propagation streams
  rendering: false, // a render runs
  pending: false, // a seek came while it ran
};

export const api = new Api(new URL("api/v1/", document.baseURI), askKey);
